//! `loupe synth --shape NAME --type TYPE OUT`: a GGUF with the tensor layout of a known
//! model (llama3-8b, llama2-7b, qwen2.5-7b, small test shapes) and seeded random weights,
//! with a vocabulary so it tokenizes (a real model's, or a generated one where there is
//! none): for measuring the speed and memory of models too big to fetch here.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;

use crate::synth::{write_shape_with, Shape, VocabSource, WeightTypes};
use loupe_gguf::atomic::Overwrite;
use loupe_gguf::GgufFile;

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// The layout: llama3-8b, llama3.1-8b, llama2-7b, qwen2.5-7b, or the test shapes tiny,
    /// tiny-qwen2, small.
    #[arg(long, value_name = "NAME")]
    pub shape: String,
    /// A recipe (Q4_0, Q8_0, Q4_K_M, ... mixed per tensor as llama-quantize does) or one
    /// tensor type for every matrix (Q4_K, Q5_K, ...).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_weight_types)]
    pub ty: WeightTypes,
    /// Where to write the model (under a temporary name, then renamed).
    pub out: PathBuf,
    /// Model whose tokenizer is copied, fitted to the shape's vocabulary size; or
    /// `generated`: a byte-level BPE vocabulary made here, of the shape's size (32000 for
    /// the test shapes), for machines with no model [default: the Qwen2.5-Coder test
    /// model; a generated vocabulary, with a note, when that file is missing].
    #[arg(long, value_name = "MODEL|generated", value_parser = parse_vocab_from)]
    pub vocab_from: Option<VocabFrom>,
    /// Seed of the random weights.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Override the shape's layer count (quick tests of big shapes).
    #[arg(long, value_name = "N")]
    pub layers: Option<usize>,
    /// Replace OUT even when it is not a GGUF model (a GGUF file is always replaced; a
    /// device, a folder or an open model never is).
    #[arg(long)]
    pub force: bool,
}

fn parse_weight_types(s: &str) -> Result<WeightTypes, String> {
    s.parse()
}

/// What `--vocab-from` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VocabFrom {
    /// A model file whose tokenizer is copied.
    Model(PathBuf),
    /// A vocabulary generated in-process (`generated`; a file of that name is `./generated`).
    Generated,
}

fn parse_vocab_from(s: &str) -> Result<VocabFrom, String> {
    Ok(match s {
        "generated" => VocabFrom::Generated,
        path => VocabFrom::Model(path.into()),
    })
}

/// The donor model to copy the tokenizer of, or `None` for a generated vocabulary: the
/// model `--vocab-from` names (which must then be read), else the Qwen2.5-Coder test
/// model when its file is there.
fn donor_path(vocab_from: Option<&VocabFrom>) -> Option<PathBuf> {
    match vocab_from {
        Some(VocabFrom::Model(path)) => Some(path.clone()),
        Some(VocabFrom::Generated) => None,
        None => {
            let default = crate::store::QWEN25_CODER_05B.path();
            if default.exists() {
                return Some(default);
            }
            eprintln!(
                "note: the default vocabulary donor {} is missing: using a generated \
                 vocabulary (give --vocab-from MODEL for a real model's, or fetch the test \
                 models with scripts/fetch-models.sh)",
                default.display()
            );
            None
        }
    }
}

pub fn run(args: &SynthArgs, out: &mut impl Write) -> Result<()> {
    let mut shape = Shape::named(&args.shape)?;
    if let Some(n) = args.layers {
        ensure!(n > 0, "--layers must be at least 1");
        shape.n_layer = n;
    }
    let donor_path = donor_path(args.vocab_from.as_ref());
    let donor = match &donor_path {
        Some(path) => Some(GgufFile::open(path).with_context(|| {
            format!(
                "cannot read the vocabulary donor {} (give --vocab-from MODEL, or \
                 --vocab-from generated for a vocabulary made without one)",
                path.display()
            )
        })?),
        None => None,
    };
    let vocab = donor
        .as_ref()
        .map_or(VocabSource::Generated, VocabSource::Donor);
    let t0 = Instant::now();
    let overwrite = Overwrite::forced(args.force);
    let report = write_shape_with(&shape, args.ty, args.seed, vocab, &args.out, overwrite)?;
    let secs = t0.elapsed().as_secs_f64();
    if let Some(note) = &report.vocab_note {
        eprintln!("note: {note}");
    }
    for (name, wanted, used) in &report.fallbacks {
        eprintln!("note: {name}: rows do not fit {wanted}, written as {used}");
    }
    let vocab_origin = match &donor_path {
        Some(path) => format!("from {}", path.display()),
        None => "generated".to_string(),
    };
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(t, n)| format!("{t}×{n}"))
        .collect();
    writeln!(
        out,
        "wrote {}: shape {} ({} layers, vocabulary {} {vocab_origin}), {} ({}), {} tensors, \
         {:.2} GiB in {secs:.1} s",
        args.out.display(),
        shape.name,
        shape.n_layer,
        report.n_vocab,
        args.ty,
        types.join(", "),
        report.n_tensors,
        report.file_bytes as f64 / (1u64 << 30) as f64,
    )?;
    Ok(())
}

//! `loupe quantize IN OUT TYPE`: write a model quantized with llama.cpp's recipe for TYPE
//! (Q4_K_M, Q8_0, ...), tensor for tensor the bytes llama-quantize writes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use loupe_quant::GgmlType;

use super::format::ProgressLine;
use crate::quantize::{
    parse_tensor_type, quantize_model, FileType, QuantizeEvent, QuantizeOptions,
};
use loupe_gguf::atomic::Overwrite;
use loupe_gguf::GgufFile;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The source model: F32, F16 or BF16 (a quantized one needs --allow-requantize); a
    /// GGUF file, a store name or a hub reference (pulled if not in the store).
    pub input: PathBuf,
    /// Where to write the quantized model (written under a temporary name, then renamed).
    pub output: PathBuf,
    /// The recipe: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S,
    /// Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, IQ4_NL, IQ4_XS, F16, BF16, F32.
    #[arg(value_name = "TYPE", value_parser = FileType::from_str_arg)]
    pub ftype: FileType,
    /// Worker threads [default: all cores; at most the logical CPUs].
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Give every quantized tensor the recipe's default type (no per-tensor mixing).
    #[arg(long)]
    pub pure: bool,
    /// Type for output.weight (and a tied token embedding), e.g. Q8_0 or F16.
    #[arg(long, value_name = "T", value_parser = parse_tensor_type)]
    pub output_tensor_type: Option<GgmlType>,
    /// Type for token_embd.weight.
    #[arg(long, value_name = "T", value_parser = parse_tensor_type)]
    pub token_embedding_type: Option<GgmlType>,
    /// Accept an already-quantized source: it is decoded and quantized again, which loses
    /// quality twice.
    #[arg(long)]
    pub allow_requantize: bool,
    /// Replace OUTPUT even when it is not a GGUF model (a GGUF file is always replaced;
    /// a device, a folder or the model being read never is).
    #[arg(long)]
    pub force: bool,
}

impl FileType {
    fn from_str_arg(s: &str) -> Result<FileType, String> {
        s.parse()
    }
}

pub fn run(args: &QuantizeArgs, out: &mut impl Write) -> Result<()> {
    let threads = super::model_args::threads(args.threads)?;
    let path = crate::cli::pull::model_path(&args.input)?;
    let input =
        GgufFile::open(&path).with_context(|| format!("cannot read model {}", path.display()))?;
    let opts = QuantizeOptions {
        ftype: args.ftype,
        threads: threads.unwrap_or(0),
        pure: args.pure,
        output_tensor_type: args.output_tensor_type,
        token_embedding_type: args.token_embedding_type,
        allow_requantize: args.allow_requantize,
        overwrite: Overwrite::forced(args.force),
    };
    let mut line = ProgressLine::terminal_only();
    let report = quantize_model(&input, &args.output, &opts, &mut |ev| match ev {
        QuantizeEvent::Requantizing { tensors } => eprintln!(
            "warning: requantizing {tensors} already-quantized tensors: they are decoded and \
             quantized again, so their quality is lost twice (an F32/F16/BF16 source is better)"
        ),
        QuantizeEvent::Fallback {
            tensor,
            wanted,
            used,
        } => eprintln!("note: {tensor}: row length does not fit {wanted}, using {used}"),
        QuantizeEvent::Progress {
            index,
            count,
            tensor,
            done_elems,
            total_elems,
            secs,
        } => {
            let pct = 100.0 * done_elems as f64 / total_elems.max(1) as f64;
            line.show(&format!(
                "[{index:>4}/{count}] {pct:5.1}% {secs:6.1} s  {tensor}"
            ));
        }
    });
    line.finish();
    let report = report.with_context(|| format!("cannot quantize {}", args.input.display()))?;
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for (_, _, ty) in &report.tensors {
        match counts.iter_mut().find(|(t, _)| t == ty) {
            Some((_, n)) => *n += 1,
            None => counts.push((*ty, 1)),
        }
    }
    counts.sort();
    let mix: Vec<String> = counts.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let bpw = |b: u64| 8.0 * b as f64 / report.n_elements.max(1) as f64;
    writeln!(
        out,
        "wrote {} ({}): {:.1} MiB ({:.2} bits/weight) from {:.1} MiB ({:.2}) in {:.1} s; \
         tensors: {}",
        args.output.display(),
        args.ftype,
        mib(report.bytes_out),
        bpw(report.bytes_out),
        mib(report.bytes_in),
        bpw(report.bytes_in),
        report.seconds,
        mix.join(", ")
    )?;
    Ok(())
}

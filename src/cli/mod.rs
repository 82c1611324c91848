//! The command line: clap definitions and one module per subcommand.

mod bench;
mod chat;
mod compare;
mod format;
mod gpu;
mod inspect;
mod list;
pub mod model_args;
pub mod next;
mod perplexity;
pub mod pull;
mod quantize;
mod rm;
mod run;
pub mod sampler_args;
mod serve;
mod synth;
mod tokenize;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "loupe",
    version,
    about = "Run quantized GGUF language models and look inside how they pick each token"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prompt and generation speed like llama-bench (tokens/s, median and spread), load
    /// time and peak memory; or the machine's memory read bandwidth.
    Bench(bench::BenchArgs),
    /// Chat with an instruct model: a REPL in a terminal, one reply per line when piped.
    Chat(chat::ChatArgs),
    /// Which quantization to run: score models against a base (PPL, KL divergence, same
    /// top token, speed), or quantize a source to a ladder of types and compare them all.
    Compare(compare::CompareArgs),
    /// The GPU adapters (Vulkan, Metal, DirectX 12): name, kind, driver, limits, and which
    /// one --gpu auto picks.
    Gpu(gpu::GpuArgs),
    /// Show what a GGUF model file holds: architecture, sizes, types, tensors, metadata.
    Inspect(inspect::InspectArgs),
    /// The models in the store: name, size, type, architecture, parameters.
    List(list::ListArgs),
    /// Fetch a model from the Hugging Face hub into the store: owner/repo:QUANT or
    /// owner/repo/file.gguf (resumed if interrupted, checked against the hub's sha256).
    Pull(pull::PullArgs),
    /// Remove a model from the store.
    Rm(rm::RmArgs),
    /// Continue a text, streaming the tokens as they come.
    Run(run::RunArgs),
    /// Show how the model picks the next token: the likeliest candidates, and what each
    /// sampler stage does to them.
    Next(next::NextArgs),
    /// Perplexity of a text, computed as llama.cpp's perplexity tool does.
    Perplexity(perplexity::PerplexityArgs),
    /// Quantize a model with llama.cpp's recipes (Q4_K_M, Q8_0, ...), bit-identical to
    /// llama-quantize.
    Quantize(quantize::QuantizeArgs),
    /// Serve the model over HTTP with OpenAI's API (chat and text completions, streamed
    /// or whole, with log-probabilities), several conversations at once.
    Serve(serve::ServeArgs),
    /// Show the token ids of a text under a model's vocabulary, each with its piece.
    Tokenize(tokenize::TokenizeArgs),
    /// Write a model with the tensor layout of a known one (llama3-8b, ...) and random
    /// weights, for measuring speed and memory.
    Synth(synth::SynthArgs),
}

/// Parse the arguments, run the subcommand, and turn its outcome into an exit code.
pub fn main() -> ExitCode {
    // Before any thread: it may set an environment variable for the Vulkan loader.
    loupe_gpu::quiet_mesa_device_select();
    // llama.cpp spells some options with one dash and several letters (-ctk); clap's
    // short options are one letter, so those words become their long names first.
    let args = std::env::args_os().map(|a| {
        model_args::LLAMA_SHORT_OPTIONS
            .iter()
            .find(|(short, _)| a == *short)
            .map_or(a, |(_, long)| (*long).into())
    });
    let cli = Cli::parse_from(args);
    // Ctrl-C and SIGTERM remove the temporary files being written; the stale ones a killed
    // run left are removed by the next write in their folder, and said.
    crate::signals::install();
    loupe_gguf::atomic::set_note_sink(|note| eprintln!("loupe: {note}"));
    // A LOUPE_KERNELS request this CPU cannot honour is said once, before any work.
    if let Some(note) = loupe_quant::kernels::kernels_note() {
        eprintln!("loupe: {note}");
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = match cli.command {
        Command::Chat(args) => chat::run(&args, &mut out),
        Command::Compare(args) => compare::run(&args, &mut out),
        Command::Gpu(args) => gpu::run(&args, &mut out),
        Command::Inspect(args) => inspect::run(&args, &mut out),
        Command::List(args) => list::run(&args, &mut out),
        Command::Pull(args) => pull::run(&args, &mut out),
        Command::Rm(args) => rm::run(&args, &mut out),
        Command::Tokenize(args) => tokenize::run(&args, &mut out),
        Command::Run(args) => run::run(&args, &mut out),
        Command::Next(args) => next::run(&args, &mut out),
        Command::Perplexity(args) => perplexity::run(&args, &mut out),
        Command::Quantize(args) => quantize::run(&args, &mut out),
        Command::Bench(args) => bench::run(&args, &mut out),
        Command::Synth(args) => synth::run(&args, &mut out),
        Command::Serve(args) => serve::run(&args, &mut out),
    }
    .and_then(|()| out.flush().map_err(anyhow::Error::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`loupe inspect m | head`) is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            drop(out);
            eprintln!("error: {}", crate::report::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    loupe::cli::main()
}

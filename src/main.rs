#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pilotfish::cli::main()
}

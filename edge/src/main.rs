//! The `triad` binary: see `triad --help`.

fn main() -> std::process::ExitCode {
    triad_edge::cli::main()
}

//! Placeholder: the refusal-flood benchmark is being written (issue 9).
fn main() {
    eprintln!("refusal_flood: not written yet");
    std::process::exit(1);
}

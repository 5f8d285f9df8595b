//! `bismuthd`: not built yet (tracked as issue 3). It exits with an error rather
//! than pretend to serve; see ARCHITECTURE.md for what it will do.

fn main() {
    eprintln!("error: bismuthd is not implemented yet (issue 3); nothing was started");
    std::process::exit(2);
}

//! `api`: not built yet (tracked as issue 5). It exits with an error rather
//! than pretend to serve; see ARCHITECTURE.md for what it will do.

fn main() {
    eprintln!("error: api is not implemented yet (issue 5); nothing was started");
    std::process::exit(2);
}

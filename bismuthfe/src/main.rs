//! `bismuthfe`: not built yet (tracked as issue 6). It exits with an error rather
//! than pretend to serve; see ARCHITECTURE.md for what it will do.

fn main() {
    eprintln!("error: bismuthfe is not implemented yet (issue 6); nothing was started");
    std::process::exit(2);
}

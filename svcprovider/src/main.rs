//! `svcprovider`: not built yet (tracked as issue 7). It exits with an error rather
//! than pretend to serve; see ARCHITECTURE.md for what it will do.

fn main() {
    eprintln!("error: svcprovider is not implemented yet (issue 7); nothing was started");
    std::process::exit(2);
}

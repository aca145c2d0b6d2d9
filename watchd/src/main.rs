fn main() {
    println!("watchd {}", env!("CARGO_PKG_VERSION"));
}

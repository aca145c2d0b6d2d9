fn main() {
    println!("logd {}", env!("CARGO_PKG_VERSION"));
}

//! Writes the busybox test image as an OCI archive, for trying a node by
//! hand: `cargo run -p kelson-cri --example busybox-image -- NAME FILE.tar`,
//! then `kelson images import FILE.tar`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: busybox-image NAME FILE.tar");
        std::process::exit(2);
    };
    std::fs::write(&path, kelson_cri::image::busybox_image(&name)?)?;
    println!("wrote {name} to {path}");
    Ok(())
}

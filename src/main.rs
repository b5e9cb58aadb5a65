//! `layerfs`: the image store and mount command line. All logic lives in the library.

fn main() -> std::process::ExitCode {
    layerfs::cli::main()
}

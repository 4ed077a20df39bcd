//! Standalone shim binary (used by this crate's tests). The `navarch`
//! binary runs the same code from a hidden subcommand.

fn main() {
    navarch_runtime::shim_main(std::env::args_os().skip(1))
}

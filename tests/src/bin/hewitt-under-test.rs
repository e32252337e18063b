//! The `hewitt` binary, built inside the tests package so that its integration tests can run and
//! SIGKILL a real node process (`CARGO_BIN_EXE_hewitt-under-test`). Same code as `hewitt`.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    engine::cli::main()
}

fn main() -> std::process::ExitCode {
    settle::cli::main()
}

fn main() -> std::process::ExitCode {
    keyrot::cli::main()
}

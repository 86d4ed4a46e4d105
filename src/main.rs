use std::process::ExitCode;

fn main() -> ExitCode {
    streamml_sensor::cmd::main()
}

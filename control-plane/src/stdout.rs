//! Standard output that survives its reader going away: Rust ignores
//! SIGPIPE, so `println!` to a closed pipe (`meridian get services | head`)
//! panics. A command ends quietly instead; the demo drops the output and
//! goes on, so that it still stops every process it started.

use std::io::{ErrorKind, Write};

/// Writes `args` (and a newline) to stdout.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A command's output could not be written: a reader that went away ends
/// the command with success, as it would with SIGPIPE's default action.
pub fn command_output_failed(error: std::io::Error) {
    if error.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

/// `println!` for a command.
macro_rules! outln {
    () => {
        outln!("")
    };
    ($($arg:tt)*) => {
        if let Err(e) = $crate::stdout::write(format_args!($($arg)*), true) {
            $crate::stdout::command_output_failed(e);
        }
    };
}

/// `print!` for a command.
macro_rules! out {
    ($($arg:tt)*) => {
        if let Err(e) = $crate::stdout::write(format_args!($($arg)*), false) {
            $crate::stdout::command_output_failed(e);
        }
    };
}

/// `println!` for the demo: lost output is dropped.
macro_rules! showln {
    () => {
        showln!("")
    };
    ($($arg:tt)*) => {
        let _ = $crate::stdout::write(format_args!($($arg)*), true);
    };
}

/// `print!` for the demo.
macro_rules! show {
    ($($arg:tt)*) => {
        let _ = $crate::stdout::write(format_args!($($arg)*), false);
    };
}

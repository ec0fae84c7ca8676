//! Configuration errors. Every variant names the file, the line (when there is
//! one), the parameter and what is allowed, so an admin can fix it without
//! reading the source.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// The built-in default from the parameter registry.
    #[default]
    Default,
    /// A line of a file (main.cf, master.cf or a lookup table).
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A `-o name=value` override of a master.cf service.
    Override {
        /// The master.cf file.
        path: PathBuf,
        /// 1-based line number of the service entry.
        line: usize,
        /// The service name (first column of master.cf).
        service: String,
    },
    /// The command line (`postconf -e`, `sendmail -o`, ...).
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File { path, line } => write!(f, "{}:{}", path.display(), line),
            Origin::Override {
                path,
                line,
                service,
            } => write!(f, "{}:{} (service {})", path.display(), line, service),
            Origin::CommandLine => write!(f, "command line"),
        }
    }
}

/// A configuration error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line that is not `name = value` (main.cf) or not a service entry
    /// (master.cf), or a table line that cannot be parsed.
    #[error("{origin}: {message}")]
    Syntax {
        /// Where.
        origin: Origin,
        /// What is wrong and what is expected.
        message: String,
    },
    /// A parameter has a value outside what it allows.
    #[error("{origin}: bad value for {name}: \"{value}\": {allowed}")]
    BadValue {
        /// Where the value came from.
        origin: Origin,
        /// The parameter name.
        name: String,
        /// The value as written (after `$name` expansion).
        value: String,
        /// What is allowed, in words.
        allowed: String,
    },
    /// `$name` expansion did not terminate or was malformed.
    #[error("{origin}: {name}: {message}")]
    Expansion {
        /// Where the value came from.
        origin: Origin,
        /// The parameter whose value failed to expand.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A lookup table could not be opened or has a bad entry.
    #[error("{origin}: table {table}: {message}")]
    Table {
        /// Where the table was named, or the table file and line for entry errors.
        origin: Origin,
        /// The table as named, e.g. `hash:/etc/postern/transport`.
        table: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Shorthand for an I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Several errors, collected so that `postern check` can report all of them at once.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    /// True when no error was collected.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Adds one error.
    pub fn push(&mut self, e: Error) {
        self.0.push(e);
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

impl From<Error> for Errors {
    fn from(e: Error) -> Self {
        Errors(vec![e])
    }
}

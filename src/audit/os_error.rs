//! [`OsError`]: an I/O error shown with its errno name, so that an operator reading
//! `/readyz` or the log sees `ENOSPC` or `EISDIR` and not only the translated text (README
//! "Audit log"): `No space left on device (os error 28, ENOSPC)`.
//!
//! It is `Clone` (unlike `std::io::Error`), so the writer can keep the error that holds
//! it closed and report it again on every append until the path opens.

use std::fmt;
use std::io;

/// An OS error (or another I/O error) with its symbolic name when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    kind: io::ErrorKind,
    code: Option<i32>,
    /// The text without the ` (os error N)` suffix std adds.
    message: String,
}

impl OsError {
    /// The error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }

    /// The errno, when it came from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.code
    }

    /// The symbolic name of the errno (`ENOSPC`), when known.
    pub fn name(&self) -> Option<&'static str> {
        self.code.and_then(errno_name)
    }
}

impl From<io::Error> for OsError {
    fn from(e: io::Error) -> Self {
        let code = e.raw_os_error();
        let mut message = e.to_string();
        if let Some(code) = code {
            let suffix = format!(" (os error {code})");
            if message.ends_with(&suffix) {
                message.truncate(message.len() - suffix.len());
            }
        }
        OsError {
            kind: e.kind(),
            code,
            message,
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (self.code, self.name()) {
            (Some(code), Some(name)) => write!(f, " (os error {code}, {name})"),
            (Some(code), None) => write!(f, " (os error {code})"),
            (None, _) => Ok(()),
        }
    }
}

impl std::error::Error for OsError {}

/// The errno name of `code` on Linux with the generic numbering (as on x86 and ARM).
/// Elsewhere the numbers differ, so there is no name; the message and number still show.
pub fn errno_name(code: i32) -> Option<&'static str> {
    const GENERIC_NUMBERING: bool = cfg!(all(
        target_os = "linux",
        not(any(
            target_arch = "mips",
            target_arch = "mips64",
            target_arch = "sparc64",
            target_arch = "powerpc",
            target_arch = "powerpc64"
        ))
    ));
    if !GENERIC_NUMBERING {
        return None;
    }
    Some(match code {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        7 => "E2BIG",
        8 => "ENOEXEC",
        9 => "EBADF",
        10 => "ECHILD",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        15 => "ENOTBLK",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        25 => "ENOTTY",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        29 => "ESPIPE",
        30 => "EROFS",
        31 => "EMLINK",
        32 => "EPIPE",
        33 => "EDOM",
        34 => "ERANGE",
        35 => "EDEADLK",
        36 => "ENAMETOOLONG",
        37 => "ENOLCK",
        38 => "ENOSYS",
        39 => "ENOTEMPTY",
        40 => "ELOOP",
        61 => "ENODATA",
        62 => "ETIME",
        71 => "EPROTO",
        74 => "EBADMSG",
        75 => "EOVERFLOW",
        84 => "EILSEQ",
        95 => "EOPNOTSUPP",
        104 => "ECONNRESET",
        107 => "ENOTCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        116 => "ESTALE",
        117 => "EUCLEAN",
        121 => "EREMOTEIO",
        122 => "EDQUOT",
        123 => "ENOMEDIUM",
        125 => "ECANCELED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn os_errors_show_number_and_name_once() {
        let e = OsError::from(io::Error::from_raw_os_error(28));
        assert_eq!(
            e.to_string(),
            "No space left on device (os error 28, ENOSPC)"
        );
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let e = OsError::from(io::Error::from_raw_os_error(21));
        assert_eq!(e.to_string(), "Is a directory (os error 21, EISDIR)");
        assert_eq!(
            OsError::from(io::Error::from_raw_os_error(4000)).to_string(),
            io::Error::from_raw_os_error(4000).to_string()
        );
    }

    #[test]
    fn other_io_errors_keep_their_text() {
        let e = OsError::from(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        assert_eq!(e.to_string(), "short write");
        assert_eq!(e.raw_os_error(), None);
    }

    /// The table against the C library's own constants.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn names_match_libc() {
        for (code, name) in [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EIO, "EIO"),
            (libc::EBADF, "EBADF"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMEM, "ENOMEM"),
            (libc::EACCES, "EACCES"),
            (libc::EEXIST, "EEXIST"),
            (libc::EXDEV, "EXDEV"),
            (libc::ENOTDIR, "ENOTDIR"),
            (libc::EISDIR, "EISDIR"),
            (libc::EINVAL, "EINVAL"),
            (libc::ENFILE, "ENFILE"),
            (libc::EMFILE, "EMFILE"),
            (libc::ETXTBSY, "ETXTBSY"),
            (libc::EFBIG, "EFBIG"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::EROFS, "EROFS"),
            (libc::EPIPE, "EPIPE"),
            (libc::ENAMETOOLONG, "ENAMETOOLONG"),
            (libc::ENOLCK, "ENOLCK"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::ELOOP, "ELOOP"),
            (libc::ENODATA, "ENODATA"),
            (libc::EOVERFLOW, "EOVERFLOW"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::ENOTCONN, "ENOTCONN"),
            (libc::ETIMEDOUT, "ETIMEDOUT"),
            (libc::ESTALE, "ESTALE"),
            (libc::EUCLEAN, "EUCLEAN"),
            (libc::EREMOTEIO, "EREMOTEIO"),
            (libc::EDQUOT, "EDQUOT"),
            (libc::ENOMEDIUM, "ENOMEDIUM"),
            (libc::ECANCELED, "ECANCELED"),
        ] {
            assert_eq!(errno_name(code), Some(name), "{code}");
        }
    }
}

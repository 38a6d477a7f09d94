//! The one error type of this crate.

use std::path::PathBuf;

/// Why a Go binary could not be inspected.
///
/// Every variant names the file; variants about one function or type name it too.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, sized or mapped.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the ELF magic (this includes an empty file).
    #[error("{path}: not an ELF file")]
    NotElf { path: PathBuf },
    /// The ELF headers point past the end of the file.
    #[error("{path}: truncated ELF file")]
    Truncated {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    /// The ELF headers are inconsistent in some other way.
    #[error("{path}: malformed ELF file")]
    Malformed {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    /// `e_ident[EI_CLASS]` is neither 32- nor 64-bit.
    #[error("{path}: unknown ELF class {class}")]
    ElfClass { path: PathBuf, class: u8 },
    /// An ELF file with neither `.go.buildinfo` nor any Go runtime marker.
    #[error("{path}: not a Go binary")]
    NotGo { path: PathBuf },
    /// `.go.buildinfo` is present but cannot be decoded.
    #[error("{path}: malformed .go.buildinfo")]
    BuildInfo {
        path: PathBuf,
        #[source]
        source: BuildInfoError,
    },
    /// The binary was built by a Go release that predates the register ABI on its
    /// architecture (go1.17 on amd64, go1.18 on arm64), or its version is unknown.
    #[error("{path}: {version} predates the register ABI")]
    GoTooOld { path: PathBuf, version: String },
    /// The binary carries no DWARF (built with `-ldflags=-w` or stripped).
    #[error("{path}: no DWARF")]
    NoDwarf { path: PathBuf },
    /// A DWARF section could not be decompressed.
    #[error("{path}: cannot decompress {section}")]
    Decompress {
        path: PathBuf,
        section: &'static str,
        #[source]
        source: object::Error,
    },
    /// A compressed debug section claims an implausible decompressed size.
    #[error("{path}: {section} claims {size} bytes decompressed")]
    SectionTooLarge {
        path: PathBuf,
        section: &'static str,
        size: u64,
    },
    /// `.debug_info` or `.debug_abbrev` could not be parsed.
    #[error("{path}: malformed DWARF")]
    Dwarf {
        path: PathBuf,
        #[source]
        source: gimli::Error,
    },
    /// A function's byte range is not backed by the file.
    #[error("{path}: code of {symbol} at {address:#x} (+{size}) is not in the file")]
    CodeNotInFile {
        path: PathBuf,
        symbol: String,
        address: u64,
        size: u64,
    },
    /// RET sites cannot be found for this architecture.
    #[error("{path}: cannot decode {symbol}: unsupported architecture (e_machine {machine})")]
    UnsupportedArch {
        path: PathBuf,
        symbol: String,
        machine: u16,
    },
    /// `.gopclntab` is missing, of an unsupported version, or inconsistent.
    #[error("{path}: {reason}")]
    Pclntab { path: PathBuf, reason: PclntabError },
}

/// Why `.go.buildinfo` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildInfoError {
    #[error("no build info magic")]
    NoMagic,
    #[error("header shorter than 32 bytes")]
    ShortHeader,
    #[error("unsupported pointer size {0}")]
    PointerSize(u8),
    #[error("string length runs past the data")]
    StringOutOfRange,
    #[error("pointer {0:#x} is not in the file")]
    BadPointer(u64),
    #[error("empty go version")]
    EmptyVersion,
    #[error("string is not utf-8")]
    NotUtf8,
}

/// Why function addresses cannot be read from `.gopclntab`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PclntabError {
    /// Neither a `.gopclntab` section nor a valid header in a read-only segment.
    #[error("no pclntab found")]
    NotFound,
    /// Not the Go 1.18+ layout: `0xfffffffa` is go1.16-1.17, `0xfffffffb` go1.2-1.15.
    #[error("unsupported pclntab magic {0:#010x}")]
    Magic(u32),
    #[error("corrupt pclntab: {0}")]
    Corrupt(&'static str),
    /// The header has no text start (Go 1.26+) and no `runtime.moduledata` points at it.
    #[error("pclntab text start not found: no runtime.moduledata points at the pclntab")]
    NoTextStart,
    #[error("pclntab header puts the text at {header:#x}, runtime.moduledata at {moduledata:#x}")]
    TextStartMismatch { header: u64, moduledata: u64 },
}

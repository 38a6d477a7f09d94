//! `.go.buildinfo`: the Go version and module list embedded by the Go linker (Go 1.13+).
//!
//! Layout (Go's `debug/buildinfo`): a 32-byte header starting with the 14-byte magic
//! `"\xff Go buildinf:"` at a 16-byte aligned position, then `ptrSize` (byte 14) and
//! `flags` (byte 15). With `flags & 2` (Go 1.18+) the version and the module info follow
//! the header inline, each as uvarint length + bytes. Otherwise bytes 16.. hold two
//! pointers to Go string headers `(ptr, len)`, read through the binary's address space.

use crate::error::BuildInfoError;

/// The magic that starts a build info header.
pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
const ALIGN: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_VERSION_INLINE: u8 = 2;
/// Module info is framed by 16 bytes of sentinel at each end.
const SENTINEL_LEN: usize = 16;
/// Upper bound for a string read through a pointer; real module lists are a few KiB.
const MAX_POINTER_STRING: u64 = 16 << 20;

/// What the Go linker recorded about how the binary was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// The toolchain version, e.g. `go1.26.8` (may carry suffixes such as
    /// `go1.22.0 X:boringcrypto` or be `devel go1.27-abcdef ...`).
    pub go_version: String,
    /// The main module's path (`mod` line); falls back to the main package path when
    /// the binary has no main module (e.g. `go build main.go` outside a module).
    pub main_path: Option<String>,
    /// The main module's version, e.g. `(devel)` or `v1.2.3`.
    pub main_version: Option<String>,
    /// The main package's import path (`path` line), e.g. `example.com/hello/cmd/x`.
    pub main_package: Option<String>,
    /// Dependencies, with `=>` replacements applied.
    pub deps: Vec<Module>,
    /// `build` settings in order, e.g. `("GOARCH", "amd64")`, `("-ldflags", "-s -w")`.
    pub settings: Vec<(String, String)>,
}

/// One module dependency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Module {
    /// The module path that is compiled in. For a replaced dependency this is the
    /// replacement's path (which may be a local directory).
    pub path: String,
    /// The version compiled in (the replacement's version when replaced; may be empty
    /// for a directory replacement).
    pub version: String,
    /// For a replaced dependency, the original module path. Go symbol names keep using
    /// this import path, so probe catalogs should match on it.
    pub replaces: Option<String>,
}

/// The version as `(major, minor, patch)`; `None` when it cannot be read.
///
/// Accepts `go1.26.8`, `go1.21rc2` (→ patch 0), `go1.9`, `devel go1.27-abc ...`.
pub fn parse_go_version(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.trim();
    let v = v.strip_prefix("devel ").unwrap_or(v);
    let v = v.strip_prefix("go")?;
    let mut parts = v.splitn(3, '.');
    let major = leading_number(parts.next()?)?;
    let minor = leading_number(parts.next()?)?;
    let patch = parts.next().and_then(leading_number).unwrap_or(0);
    Some((major, minor, patch))
}

fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.get(..end)?.parse().ok()
}

impl BuildInfo {
    /// See [`parse_go_version`].
    pub fn version_number(&self) -> Option<(u32, u32, u32)> {
        parse_go_version(&self.go_version)
    }

    /// The version of dependency `path` (matched on the compiled path or the path it
    /// replaces).
    pub fn dep_version(&self, path: &str) -> Option<&str> {
        self.deps
            .iter()
            .find(|m| m.path == path || m.replaces.as_deref() == Some(path))
            .map(|m| m.version.as_str())
    }
}

/// Finds the header: the first occurrence of [`MAGIC`] at a 16-byte aligned offset of
/// `data` with a full header after it. Returns its offset.
pub fn find_header(data: &[u8]) -> Option<usize> {
    let mut pos = 0usize;
    while pos < data.len() {
        let rest = data.get(pos..)?;
        let i = rest.windows(MAGIC.len()).position(|w| w == MAGIC)?;
        let at = pos.checked_add(i)?;
        if at % ALIGN == 0 && data.len() - at >= HEADER_SIZE {
            return Some(at);
        }
        // Continue at the next aligned position after this hit.
        pos = at.checked_add(1)?.checked_next_multiple_of(ALIGN)?;
    }
    None
}

/// Parses a build info region. `data` starts at (or before, aligned) the header.
/// `read_at(vaddr, len)` reads bytes of the binary's address space for the pointer form.
pub fn parse<'a>(
    data: &[u8],
    read_at: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Result<BuildInfo, BuildInfoError> {
    let start = find_header(data).ok_or(BuildInfoError::NoMagic)?;
    let hdr = data.get(start..).ok_or(BuildInfoError::ShortHeader)?;
    if hdr.len() < HEADER_SIZE {
        return Err(BuildInfoError::ShortHeader);
    }
    let ptr_size = hdr[14];
    let flags = hdr[15];
    let (version, modinfo): (Vec<u8>, Vec<u8>) = if flags & FLAG_VERSION_INLINE != 0 {
        let rest = &hdr[HEADER_SIZE..];
        let (v, rest) = decode_string(rest)?;
        // A missing module string is allowed (binaries built without module support).
        let m = decode_string(rest).map(|(m, _)| m).unwrap_or(&[]);
        (v.to_vec(), m.to_vec())
    } else {
        let big = flags & FLAG_BIG_ENDIAN != 0;
        let size = match ptr_size {
            4 | 8 => usize::from(ptr_size),
            other => return Err(BuildInfoError::PointerSize(other)),
        };
        let p1 = read_word(&hdr[16..], size, big).ok_or(BuildInfoError::ShortHeader)?;
        let p2 = hdr
            .get(16 + size..)
            .and_then(|b| read_word(b, size, big))
            .ok_or(BuildInfoError::ShortHeader)?;
        let v = read_go_string(&read_at, p1, size, big)?;
        let m = read_go_string(&read_at, p2, size, big).unwrap_or_default();
        (v, m)
    };
    if version.is_empty() {
        return Err(BuildInfoError::EmptyVersion);
    }
    let go_version = String::from_utf8(version).map_err(|_| BuildInfoError::NotUtf8)?;
    let mut info = BuildInfo {
        go_version,
        ..BuildInfo::default()
    };
    // Strip the sentinel framing exactly as Go does: only when the byte before the
    // trailing sentinel is the final newline.
    let n = modinfo.len();
    if n > 2 * SENTINEL_LEN && modinfo.get(n - SENTINEL_LEN - 1) == Some(&b'\n') {
        let body = &modinfo[SENTINEL_LEN..n - SENTINEL_LEN];
        parse_modinfo(&String::from_utf8_lossy(body), &mut info);
    }
    Ok(info)
}

/// Parses the text of the module info (as printed by `go version -m`).
pub fn parse_modinfo(text: &str, info: &mut BuildInfo) {
    for line in text.lines() {
        let mut fields = line.split('\t');
        let kind = fields.next().unwrap_or("");
        match kind {
            "path" => info.main_package = fields.next().map(str::to_owned),
            "mod" => {
                info.main_path = fields.next().map(str::to_owned);
                info.main_version = fields.next().map(str::to_owned);
            }
            "dep" => {
                if let Some(path) = fields.next() {
                    info.deps.push(Module {
                        path: path.to_owned(),
                        version: fields.next().unwrap_or("").to_owned(),
                        replaces: None,
                    });
                }
            }
            "=>" => {
                if let (Some(last), Some(path)) = (info.deps.last_mut(), fields.next()) {
                    let original = std::mem::replace(&mut last.path, path.to_owned());
                    last.version = fields.next().unwrap_or("").to_owned();
                    last.replaces = Some(original);
                }
            }
            "build" => {
                let rest = line.get("build\t".len()..).unwrap_or("");
                if let Some((k, v)) = split_setting(rest) {
                    info.settings.push((k, v));
                }
            }
            _ => {}
        }
    }
    if info.main_path.is_none() {
        info.main_path.clone_from(&info.main_package);
    }
}

/// Splits `key=value`, where either side may be a Go-quoted string.
fn split_setting(s: &str) -> Option<(String, String)> {
    let (key, rest) = if s.starts_with('"') {
        let (k, used) = unquote(s)?;
        (k, s.get(used..)?.strip_prefix('=')?)
    } else {
        let (k, v) = s.split_once('=')?;
        (k.to_owned(), v)
    };
    let value = if rest.starts_with('"') {
        unquote(rest).map_or_else(|| rest.to_owned(), |(v, _)| v)
    } else {
        rest.to_owned()
    };
    Some((key, value))
}

/// Decodes a leading Go double-quoted string; returns it and the bytes consumed.
fn unquote(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    if chars.next()?.1 != '"' {
        return None;
    }
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Reads a uvarint length followed by that many bytes.
fn decode_string(data: &[u8]) -> Result<(&[u8], &[u8]), BuildInfoError> {
    let (len, used) = read_uvarint(data).ok_or(BuildInfoError::StringOutOfRange)?;
    let rest = data.get(used..).ok_or(BuildInfoError::StringOutOfRange)?;
    let len = usize::try_from(len).map_err(|_| BuildInfoError::StringOutOfRange)?;
    if len > rest.len() {
        return Err(BuildInfoError::StringOutOfRange);
    }
    Ok(rest.split_at(len))
}

fn read_uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        value |= part.checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn read_word(data: &[u8], size: usize, big: bool) -> Option<u64> {
    let b = data.get(..size)?;
    Some(match (size, big) {
        (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
        (4, true) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
        (8, false) => u64::from_le_bytes(b.try_into().ok()?),
        (8, true) => u64::from_be_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// Reads a Go string header `(ptr, len)` at `addr` and then its bytes.
fn read_go_string<'a>(
    read_at: &impl Fn(u64, u64) -> Option<&'a [u8]>,
    addr: u64,
    size: usize,
    big: bool,
) -> Result<Vec<u8>, BuildInfoError> {
    let hdr = read_at(addr, 2 * size as u64).ok_or(BuildInfoError::BadPointer(addr))?;
    let ptr = read_word(hdr, size, big).ok_or(BuildInfoError::BadPointer(addr))?;
    let len = hdr
        .get(size..)
        .and_then(|b| read_word(b, size, big))
        .ok_or(BuildInfoError::BadPointer(addr))?;
    if len > MAX_POINTER_STRING {
        return Err(BuildInfoError::StringOutOfRange);
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    read_at(ptr, len)
        .map(<[u8]>::to_vec)
        .ok_or(BuildInfoError::BadPointer(ptr))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may unwrap")]
mod tests {
    use super::*;

    const SENTINEL_START: &[u8; 16] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
    const SENTINEL_END: &[u8; 16] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    const MODINFO: &str = "path\texample.com/app/cmd/server\n\
        mod\texample.com/app\tv1.2.3\th1:abc=\n\
        dep\tgithub.com/gin-gonic/gin\tv1.9.1\th1:def=\n\
        dep\tgoogle.golang.org/grpc\tv1.60.0\th1:ghi=\n\
        =>\tgithub.com/fork/grpc\tv1.60.1-fork\th1:jkl=\n\
        build\t-buildmode=exe\n\
        build\t-ldflags=\"-s -w\"\n\
        build\tCGO_ENABLED=0\n\
        build\tGOARCH=amd64\n";

    fn framed(text: &str) -> Vec<u8> {
        let mut v = SENTINEL_START.to_vec();
        v.extend_from_slice(text.as_bytes());
        v.extend_from_slice(SENTINEL_END);
        v
    }

    fn uvarint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    fn header(ptr_size: u8, flags: u8) -> Vec<u8> {
        let mut h = MAGIC.to_vec();
        h.push(ptr_size);
        h.push(flags);
        h.resize(HEADER_SIZE, 0);
        h
    }

    fn inline(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut data = header(8, FLAG_VERSION_INLINE);
        uvarint(version.len(), &mut data);
        data.extend_from_slice(version.as_bytes());
        uvarint(modinfo.len(), &mut data);
        data.extend_from_slice(modinfo);
        data
    }

    fn no_memory(_: u64, _: u64) -> Option<&'static [u8]> {
        None
    }

    fn assert_full(info: &BuildInfo, version: &str) {
        assert_eq!(info.go_version, version);
        assert_eq!(info.main_path.as_deref(), Some("example.com/app"));
        assert_eq!(info.main_version.as_deref(), Some("v1.2.3"));
        assert_eq!(
            info.main_package.as_deref(),
            Some("example.com/app/cmd/server")
        );
        assert_eq!(
            info.deps,
            vec![
                Module {
                    path: "github.com/gin-gonic/gin".into(),
                    version: "v1.9.1".into(),
                    replaces: None,
                },
                Module {
                    path: "github.com/fork/grpc".into(),
                    version: "v1.60.1-fork".into(),
                    replaces: Some("google.golang.org/grpc".into()),
                },
            ]
        );
        assert_eq!(
            info.dep_version("google.golang.org/grpc"),
            Some("v1.60.1-fork")
        );
        assert_eq!(info.dep_version("github.com/gin-gonic/gin"), Some("v1.9.1"));
        assert_eq!(
            info.settings,
            vec![
                ("-buildmode".to_owned(), "exe".to_owned()),
                ("-ldflags".to_owned(), "-s -w".to_owned()),
                ("CGO_ENABLED".to_owned(), "0".to_owned()),
                ("GOARCH".to_owned(), "amd64".to_owned()),
            ]
        );
    }

    #[test]
    fn inline_form() {
        let data = inline("go1.26.8", &framed(MODINFO));
        let info = parse(&data, no_memory).unwrap();
        assert_full(&info, "go1.26.8");
        assert_eq!(info.version_number(), Some((1, 26, 8)));
    }

    #[test]
    fn inline_form_found_at_an_aligned_offset() {
        // A misaligned copy of the magic first, then the real header at offset 48.
        let mut data = vec![0u8; 3];
        data.extend_from_slice(MAGIC);
        data.resize(48, 0);
        data.extend_from_slice(&inline("go1.22.0", &framed(MODINFO)));
        assert_eq!(find_header(&data), Some(48));
        assert_full(&parse(&data, no_memory).unwrap(), "go1.22.0");
    }

    #[test]
    fn pointer_form_little_and_big_endian() {
        for big in [false, true] {
            // Memory: string headers at 0x1000 (version) and 0x1010 (modinfo), bytes at
            // 0x2000 and 0x3000.
            let version = b"go1.16.15".to_vec();
            let modinfo = framed(MODINFO);
            let word = |v: u64| {
                if big {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            };
            let mut headers = Vec::new();
            for (ptr, len) in [(0x2000u64, version.len()), (0x3000u64, modinfo.len())] {
                headers.extend_from_slice(&word(ptr));
                headers.extend_from_slice(&word(len as u64));
            }
            let memory: Vec<(u64, Vec<u8>)> = vec![
                (0x1000, headers),
                (0x2000, version.clone()),
                (0x3000, modinfo),
            ];
            let memory: &'static [(u64, Vec<u8>)] = Box::leak(memory.into_boxed_slice());
            let read_at = move |addr: u64, len: u64| -> Option<&'static [u8]> {
                memory.iter().find_map(|(base, bytes)| {
                    let start = usize::try_from(addr.checked_sub(*base)?).ok()?;
                    bytes.get(start..start.checked_add(usize::try_from(len).ok()?)?)
                })
            };
            let mut data = header(8, u8::from(big));
            data[16..24].copy_from_slice(&word(0x1000));
            data[24..32].copy_from_slice(&word(0x1010));
            let info = parse(&data, read_at).unwrap();
            assert_full(&info, "go1.16.15");
            assert_eq!(info.version_number(), Some((1, 16, 15)));
        }
    }

    #[test]
    fn pointer_form_with_dangling_pointer() {
        let mut data = header(8, 0);
        data[16..24].copy_from_slice(&0xdead_0000u64.to_le_bytes());
        assert_eq!(
            parse(&data, no_memory),
            Err(BuildInfoError::BadPointer(0xdead_0000))
        );
        let data = header(3, 0);
        assert_eq!(parse(&data, no_memory), Err(BuildInfoError::PointerSize(3)));
    }

    #[test]
    fn malformed_inline_data() {
        assert_eq!(parse(b"", no_memory), Err(BuildInfoError::NoMagic));
        assert_eq!(parse(&MAGIC[..], no_memory), Err(BuildInfoError::NoMagic));
        // Header but the version length runs past the end.
        let mut data = header(8, FLAG_VERSION_INLINE);
        uvarint(1000, &mut data);
        data.extend_from_slice(b"go1");
        assert_eq!(
            parse(&data, no_memory),
            Err(BuildInfoError::StringOutOfRange)
        );
        // An unterminated uvarint.
        let mut data = header(8, FLAG_VERSION_INLINE);
        data.extend_from_slice(&[0xff; 12]);
        assert_eq!(
            parse(&data, no_memory),
            Err(BuildInfoError::StringOutOfRange)
        );
        // Empty version.
        let data = inline("", b"");
        assert_eq!(parse(&data, no_memory), Err(BuildInfoError::EmptyVersion));
        // Every truncation of a valid region is an error or a (partial) parse, no panic.
        let full = inline("go1.26.8", &framed(MODINFO));
        for n in 0..full.len() {
            let _ = parse(&full[..n], no_memory);
        }
    }

    #[test]
    fn module_info_without_framing_is_ignored() {
        let data = inline("go1.26.8", MODINFO.as_bytes());
        let info = parse(&data, no_memory).unwrap();
        assert_eq!(info.go_version, "go1.26.8");
        assert_eq!(info.main_path, None);
        assert!(info.deps.is_empty());
    }

    #[test]
    fn main_path_falls_back_to_package() {
        let mut info = BuildInfo::default();
        parse_modinfo("path\tcommand-line-arguments\n", &mut info);
        assert_eq!(info.main_path.as_deref(), Some("command-line-arguments"));
        assert_eq!(info.main_version, None);
    }

    #[test]
    fn go_versions() {
        assert_eq!(parse_go_version("go1.26.8"), Some((1, 26, 8)));
        assert_eq!(parse_go_version("go1.9"), Some((1, 9, 0)));
        assert_eq!(parse_go_version("go1.21rc2"), Some((1, 21, 0)));
        assert_eq!(
            parse_go_version("go1.22.0 X:boringcrypto"),
            Some((1, 22, 0))
        );
        assert_eq!(
            parse_go_version("devel go1.27-abcdef Tue"),
            Some((1, 27, 0))
        );
        assert_eq!(parse_go_version(""), None);
        assert_eq!(parse_go_version("gox"), None);
    }
}

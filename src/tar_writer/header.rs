//! The header encoder: the blocks that go before an entry's data, in either [`Dialect`].
//!
//! Both dialects share the ustar block (field offsets, octal numbers, a NUL after them)
//! and the PAX record; they differ in what [`Dialect`] lists, each difference here as one
//! branch. The GNU dialect reproduces the `tar` crate's `Builder` (0.4) byte for byte,
//! which wrote `export` and layer directories until this module replaced it; the tests
//! below hold it to that crate's output.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::Dialect;

pub(super) const BLOCK: usize = 512;
/// ustar's name and link-name fields.
const NAME_FIELD: usize = 100;
/// Largest value of an 8-byte octal field (uid, gid): 7 octal digits.
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime): 11 octal digits.
const MAX_OCTAL_12: u64 = 0o77777777777;
const MAGIC_USTAR: &[u8; 8] = b"ustar\x0000";
const MAGIC_GNU: &[u8; 8] = b"ustar  \0";
/// Key prefix of the PAX records of extended attributes.
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";

/// Type flags.
pub(super) const FILE: u8 = b'0';
pub(super) const HARD_LINK: u8 = b'1';
pub(super) const SYMLINK: u8 = b'2';
pub(super) const CHAR: u8 = b'3';
pub(super) const BLOCK_DEV: u8 = b'4';
pub(super) const DIR: u8 = b'5';
pub(super) const FIFO: u8 = b'6';
const PAX: u8 = b'x';
const GNU_LONG_NAME: u8 = b'L';
const GNU_LONG_LINK: u8 = b'K';

/// What a header says of an entry.
pub(super) struct Fields<'a> {
    /// Relative, `/`-separated, a directory's with a trailing `/`.
    pub name: &'a [u8],
    pub flag: u8,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    /// A link's target (hard or symbolic), else empty.
    pub link: &'a [u8],
    /// (major, minor) of a device.
    pub dev: Option<(u32, u32)>,
    /// Sorted by name.
    pub xattrs: &'a [(OsString, Vec<u8>)],
}

/// Writes the header blocks of an entry (its extension records first), not its data.
pub(super) fn write(out: &mut impl Write, dialect: Dialect, f: &Fields<'_>) -> io::Result<()> {
    match dialect {
        Dialect::Pax => pax_entry(out, f),
        Dialect::Gnu => gnu_entry(out, f),
    }
}

/// Zeros up to the next block boundary after `len` bytes.
pub(super) fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (len % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Zero-padded octal digits and a NUL, filling the field; digits beyond it are dropped
/// (both writers did so: only a mode or a device number could reach that far).
fn octal(field: &mut [u8], mut v: u64) {
    let Some((last, digits)) = field.split_last_mut() else {
        return;
    };
    *last = 0;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v & 7) as u8;
        v >>= 3;
    }
}

/// The GNU number: octal when it fits (under 8^7 in an 8-byte field, 8^11 in any),
/// else base-256 (the high bit set, the value big-endian in the last 8 bytes).
fn gnu_number(field: &mut [u8], v: u64) {
    if v >= 1 << 33 || (v >= 1 << 21 && field.len() == 8) {
        field.fill(0);
        let n = field.len();
        field[n - 8..].copy_from_slice(&v.to_be_bytes());
        field[0] |= 0x80;
    } else {
        octal(field, v);
    }
}

/// A block with magic and version set.
fn block(magic: &[u8; 8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[257..265].copy_from_slice(magic);
    h
}

/// Fills in the checksum (computed with its own field as spaces): POSIX spells it as Go
/// and GNU tar do, six digits, a NUL and a space; GNU as the `tar` crate, seven and a NUL.
fn seal(h: &mut [u8; BLOCK], dialect: Dialect) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    match dialect {
        Dialect::Pax => h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes()),
        Dialect::Gnu => octal(&mut h[148..156], sum),
    }
}

/// Writes the header `h` and then extension data `data` padded to a block.
fn extension(out: &mut impl Write, h: &[u8; BLOCK], data: &[u8]) -> io::Result<()> {
    out.write_all(h)?;
    out.write_all(data)?;
    pad(out, data.len() as u64)
}

/// POSIX ustar with PAX records where ustar falls short: names and link targets over 100
/// bytes (the header keeps their first 100), ids beyond 21 bits, sizes of 8 GiB or more,
/// times before 1970 or after 2242 (the field then 0), xattrs with their names as they
/// are. The PAX header is named `././@PaxHeader`, mode 0644, owner and time 0.
fn pax_entry(out: &mut impl Write, f: &Fields<'_>) -> io::Result<()> {
    let mut rec = Vec::new();
    if f.name.len() > NAME_FIELD {
        pax_record(&mut rec, b"path", f.name);
    }
    if f.link.len() > NAME_FIELD {
        pax_record(&mut rec, b"linkpath", f.link);
    }
    let fits = |v: u64, max: u64| (v <= max).then_some(v);
    let uid = fits(f.uid, MAX_OCTAL_8);
    let gid = fits(f.gid, MAX_OCTAL_8);
    let size = fits(f.size, MAX_OCTAL_12);
    let mtime = u64::try_from(f.mtime)
        .ok()
        .and_then(|t| fits(t, MAX_OCTAL_12));
    if uid.is_none() {
        pax_record(&mut rec, b"uid", f.uid.to_string().as_bytes());
    }
    if gid.is_none() {
        pax_record(&mut rec, b"gid", f.gid.to_string().as_bytes());
    }
    if size.is_none() {
        pax_record(&mut rec, b"size", f.size.to_string().as_bytes());
    }
    if mtime.is_none() {
        pax_record(&mut rec, b"mtime", f.mtime.to_string().as_bytes());
    }
    for (k, v) in f.xattrs {
        pax_record(&mut rec, &[PAX_XATTR, k.as_bytes()].concat(), v);
    }
    if !rec.is_empty() {
        let mut h = block(MAGIC_USTAR);
        h[..14].copy_from_slice(b"././@PaxHeader");
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], rec.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = PAX;
        seal(&mut h, Dialect::Pax);
        extension(out, &h, &rec)?;
    }
    let mut h = block(MAGIC_USTAR);
    let n = f.name.len().min(NAME_FIELD);
    h[..n].copy_from_slice(&f.name[..n]);
    octal(&mut h[100..108], u64::from(f.mode));
    octal(&mut h[108..116], uid.unwrap_or(0));
    octal(&mut h[116..124], gid.unwrap_or(0));
    octal(&mut h[124..136], size.unwrap_or(0));
    octal(&mut h[136..148], mtime.unwrap_or(0));
    h[156] = f.flag;
    let l = f.link.len().min(NAME_FIELD);
    h[157..157 + l].copy_from_slice(&f.link[..l]);
    if let Some((major, minor)) = f.dev {
        octal(&mut h[329..337], u64::from(major));
        octal(&mut h[337..345], u64::from(minor));
    }
    seal(&mut h, Dialect::Pax);
    out.write_all(&h)
}

/// GNU, as the `tar` crate's `Builder` writes it: xattrs in a PAX header of its making
/// (no name, mode or owner fields, their names as lossy UTF-8), then a `././@LongLink`
/// entry for a name and one for a link target that does not fit, numbers in base-256
/// beyond octal, a time before 1970 as 0. Names and targets go through its path rules
/// ([`gnu_path_into`]).
fn gnu_entry(out: &mut impl Write, f: &Fields<'_>) -> io::Result<()> {
    if !f.xattrs.is_empty() {
        let mut rec = Vec::new();
        for (k, v) in f.xattrs {
            let key = [PAX_XATTR, k.to_string_lossy().as_bytes()].concat();
            pax_record(&mut rec, &key, v);
        }
        let mut h = block(MAGIC_USTAR);
        octal(&mut h[136..148], 0);
        gnu_number(&mut h[124..136], rec.len() as u64);
        h[156] = PAX;
        seal(&mut h, Dialect::Gnu);
        extension(out, &h, &rec)?;
    }
    let mut h = block(MAGIC_GNU);
    h[156] = f.flag;
    octal(&mut h[100..108], u64::from(f.mode));
    gnu_number(&mut h[108..116], f.uid);
    gnu_number(&mut h[116..124], f.gid);
    gnu_number(&mut h[136..148], u64::try_from(f.mtime).unwrap_or(0));
    gnu_number(&mut h[124..136], f.size);
    if let Some((major, minor)) = f.dev {
        octal(&mut h[329..337], u64::from(major));
        octal(&mut h[337..345], u64::from(minor));
    }
    if let Err(e) = gnu_path_into(&mut h[..NAME_FIELD], f.name, false, false) {
        if f.name.len() < NAME_FIELD {
            return Err(invalid(e, f.name));
        }
        // The header keeps what it can of the first 100 bytes, cut to valid UTF-8.
        let head = &f.name[..NAME_FIELD];
        let valid = std::str::from_utf8(head).map_or_else(|e| e.valid_up_to(), str::len);
        gnu_path_into(&mut h[..NAME_FIELD], &head[..valid], false, true)
            .map_err(|e| invalid(e, f.name))?;
        gnu_long(out, GNU_LONG_NAME, f.name)?;
    }
    if matches!(f.flag, HARD_LINK | SYMLINK)
        && let Err(e) = gnu_path_into(&mut h[157..257], f.link, true, false)
    {
        if f.link.len() < NAME_FIELD {
            return Err(invalid(e, f.link));
        }
        gnu_long(out, GNU_LONG_LINK, f.link)?;
    }
    seal(&mut h, Dialect::Gnu);
    out.write_all(&h)
}

fn invalid(why: &str, path: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{why}: {}", String::from_utf8_lossy(path)),
    )
}

/// A `././@LongLink` entry (`L` for a name, `K` for a link target) holding `data` and a
/// NUL.
fn gnu_long(out: &mut impl Write, flag: u8, data: &[u8]) -> io::Result<()> {
    let mut h = block(MAGIC_GNU);
    h[..13].copy_from_slice(b"././@LongLink");
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[136..148], 0);
    gnu_number(&mut h[124..136], data.len() as u64 + 1);
    h[156] = flag;
    seal(&mut h, Dialect::Gnu);
    out.write_all(&h)?;
    out.write_all(data)?;
    out.write_all(&[0])?;
    pad(out, data.len() as u64 + 1)
}

/// The `tar` crate's path rule for a name or link field: the components of `path` (as
/// std's `Path::components` finds them, so `a/./b` and `a//b` are `a/b`, and a trailing
/// `/.` goes) joined by `/`, with a trailing `/` kept. A name must be relative, without
/// `..` (a `truncated` one may end in it) and `.` only alone; a link target may be
/// anything but empty. Fails when it does not fit, leaving in the field what was written
/// until then, as the crate does (a `K` entry then carries the target).
fn gnu_path_into(
    field: &mut [u8],
    path: &[u8],
    link: bool,
    truncated: bool,
) -> Result<(), &'static str> {
    let components: Vec<Component<'_>> = Path::new(OsStr::from_bytes(path)).components().collect();
    let mut pos = 0;
    let mut emitted = false;
    let mut needs_slash = false;
    for (i, c) in components.iter().enumerate() {
        if !link {
            match c {
                Component::Prefix(_) | Component::RootDir => {
                    return Err("paths in archives must be relative");
                }
                Component::ParentDir if !truncated || i + 1 < components.len() => {
                    return Err("paths in archives must not have `..`");
                }
                Component::CurDir if components.len() > 1 => continue,
                _ => {}
            }
        }
        let bytes = c.as_os_str().as_bytes();
        if needs_slash {
            copy_into(field, &mut pos, b"/")?;
        }
        copy_into(field, &mut pos, bytes)?;
        if bytes != b"/" {
            needs_slash = true;
        }
        emitted = true;
    }
    if !emitted {
        return Err("paths in archives must have at least one component");
    }
    if path.ends_with(b"/") {
        copy_into(field, &mut pos, b"/")?;
    }
    Ok(())
}

/// Copies `bytes` at `pos`, with a NUL after it when there is room.
fn copy_into(field: &mut [u8], pos: &mut usize, bytes: &[u8]) -> Result<(), &'static str> {
    let rest = &mut field[*pos..];
    if bytes.len() > rest.len() {
        return Err("provided value is too long");
    }
    if bytes.contains(&0) {
        return Err("provided value contains a nul byte");
    }
    rest[..bytes.len()].copy_from_slice(bytes);
    if let Some(nul) = rest.get_mut(bytes.len()) {
        *nul = 0;
    }
    *pos += bytes.len();
    Ok(())
}

#[cfg(test)]
mod tests;

//! A BPF program's full name, from the kernel (bpf(2), as root): the program's own BTF names
//! its entry function, whose name is not cut to the 15 characters of `bpf_prog_info.name`
//! (podtrace's `sched_process_exec` and `sched_process_exit` are both `sched_process_e` there).
use std::os::fd::{FromRawFd, OwnedFd};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;

/// `struct bpf_prog_info` (uapi/linux/bpf.h): what we read of it, at its offsets.
const PROG_INFO_LEN: usize = 232;
const PROG_NAME: usize = 64;
const PROG_BTF_ID: usize = 128;
const PROG_FUNC_INFO_REC_SIZE: usize = 132;
const PROG_FUNC_INFO: usize = 136;
const PROG_NR_FUNC_INFO: usize = 144;
/// `struct bpf_btf_info`: btf (pointer), btf_size.
const BTF_INFO_LEN: usize = 32;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> libc::c_long {
    // SAFETY: `attr` is a zero-initialised bpf_attr of the size passed; the kernel reads and
    // writes within it (and within the buffers it points at, which the callers keep alive).
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn fd_by_id(cmd: libc::c_long, id: u32) -> Option<OwnedFd> {
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&id.to_ne_bytes());
    let fd = bpf(cmd, &mut attr);
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn info_by_fd(fd: &OwnedFd, info: &mut [u8]) -> bool {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) == 0
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

/// The name of program `id`: its entry function's name from its BTF, else the kernel's
/// (possibly cut) name, else None (gone, or no privileges).
pub fn prog_name(id: u32) -> Option<String> {
    let fd = fd_by_id(BPF_PROG_GET_FD_BY_ID, id)?;
    let mut func = [0u8; 8];
    let mut info = [0u8; PROG_INFO_LEN];
    put(&mut info, PROG_FUNC_INFO_REC_SIZE, &8u32.to_ne_bytes());
    put(&mut info, PROG_NR_FUNC_INFO, &1u32.to_ne_bytes());
    put(
        &mut info,
        PROG_FUNC_INFO,
        &(func.as_mut_ptr() as u64).to_ne_bytes(),
    );
    if !info_by_fd(&fd, &mut info) {
        return None;
    }
    let short = info
        .get(PROG_NAME..PROG_NAME + 16)
        .map(|n| {
            let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
            String::from_utf8_lossy(&n[..end]).into_owned()
        })
        .filter(|n| !n.is_empty());
    let full = (|| {
        let btf_id = u32_at(&info, PROG_BTF_ID).filter(|&b| b != 0)?;
        let nr = u32_at(&info, PROG_NR_FUNC_INFO)?;
        if nr == 0 {
            return None;
        }
        let type_id = u32_at(&func, 4)?;
        btf_type_name(&btf_raw(btf_id)?, type_id)
    })();
    full.or(short)
}

/// The raw BTF of BTF object `id`.
fn btf_raw(id: u32) -> Option<Vec<u8>> {
    let fd = fd_by_id(BPF_BTF_GET_FD_BY_ID, id)?;
    let mut info = [0u8; BTF_INFO_LEN];
    // First the size, then the bytes.
    if !info_by_fd(&fd, &mut info) {
        return None;
    }
    let size = u32_at(&info, 8)? as usize;
    let mut buf = vec![0u8; size];
    let mut info = [0u8; BTF_INFO_LEN];
    put(&mut info, 0, &(buf.as_mut_ptr() as u64).to_ne_bytes());
    put(&mut info, 8, &(size as u32).to_ne_bytes());
    info_by_fd(&fd, &mut info).then_some(buf)
}

/// The name of type `want` in raw BTF (uapi/linux/btf.h: a header, then types of 12 bytes and
/// a kind-dependent tail, then the strings).
fn btf_type_name(raw: &[u8], want: u32) -> Option<String> {
    if raw.get(..2)? != 0xeb9fu16.to_ne_bytes() {
        return None;
    }
    let hdr_len = u32_at(raw, 4)? as usize;
    let type_off = hdr_len + u32_at(raw, 8)? as usize;
    let type_len = u32_at(raw, 12)? as usize;
    let str_off = hdr_len + u32_at(raw, 16)? as usize;
    let types = raw.get(type_off..type_off + type_len)?;
    let mut at = 0;
    let mut id = 1;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)? as usize;
        let info = u32_at(types, at + 4)?;
        if id == want {
            let s = raw.get(str_off + name_off..)?;
            let end = s.iter().position(|&c| c == 0)?;
            return Some(String::from_utf8_lossy(&s[..end]).into_owned());
        }
        let vlen = (info & 0xffff) as usize;
        let tail = match (info >> 24) & 0x1f {
            1 | 14 | 17 => 4,     // int, var, decl_tag
            3 => 12,              // array
            4 | 5 => 12 * vlen,   // struct, union
            6 | 13 => 8 * vlen,   // enum, func_proto
            15 | 19 => 12 * vlen, // datasec, enum64
            _ => 0,
        };
        at += 12 + tail;
        id += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_type_name_in_raw_btf() {
        // header (24 bytes) + INT "int" (12 + 4) + FUNC "main" (12) + strings.
        let strings = b"\0int\0main\0";
        let mut raw = Vec::new();
        raw.extend(0xeb9fu16.to_ne_bytes());
        raw.extend([1u8, 0]);
        raw.extend(24u32.to_ne_bytes());
        raw.extend(0u32.to_ne_bytes());
        raw.extend(28u32.to_ne_bytes());
        raw.extend(28u32.to_ne_bytes());
        raw.extend((strings.len() as u32).to_ne_bytes());
        raw.extend(1u32.to_ne_bytes());
        raw.extend((1u32 << 24).to_ne_bytes());
        raw.extend(4u32.to_ne_bytes());
        raw.extend(0x0100_0020u32.to_ne_bytes());
        raw.extend(5u32.to_ne_bytes());
        raw.extend((12u32 << 24).to_ne_bytes());
        raw.extend(1u32.to_ne_bytes());
        raw.extend(strings);
        assert_eq!(btf_type_name(&raw, 1).as_deref(), Some("int"));
        assert_eq!(btf_type_name(&raw, 2).as_deref(), Some("main"));
        assert_eq!(btf_type_name(&raw, 3), None);
    }
}

//! A FUSE file system that never answers READ: one file, `hang`, of one page. Its server is a
//! thread speaking the raw /dev/fuse protocol (linux/fuse.h); it answers INIT, LOOKUP,
//! GETATTR, OPEN, FLUSH and RELEASE, and leaves every READ waiting, so a page fault on a
//! mapping of the file waits until the connection is aborted. Dropping [`HangFs`] aborts the
//! connection (every waiter gets an error), detaches the mount and joins the server.
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const FUSE_LOOKUP: u32 = 1;
const FUSE_FORGET: u32 = 2;
const FUSE_GETATTR: u32 = 3;
const FUSE_OPEN: u32 = 14;
const FUSE_READ: u32 = 15;
const FUSE_RELEASE: u32 = 18;
const FUSE_FLUSH: u32 = 25;
const FUSE_INIT: u32 = 26;
const FUSE_OPENDIR: u32 = 27;
const FUSE_RELEASEDIR: u32 = 29;
const FUSE_INTERRUPT: u32 = 36;
const FUSE_DESTROY: u32 = 38;
const FUSE_BATCH_FORGET: u32 = 42;

const ROOT: u64 = 1;
const FILE_NODE: u64 = 2;
pub const FILE_NAME: &str = "hang";
const CONNECTIONS: &str = "/sys/fs/fuse/connections";

pub struct HangFs {
    pub mountpoint: PathBuf,
    _dir: tempfile::TempDir,
    conn: u32,
    /// READ requests received (and left unanswered).
    reads: Arc<AtomicU64>,
    server: Option<std::thread::JoinHandle<()>>,
}

fn put_attr(b: &mut Vec<u8>, ino: u64) {
    let (mode, size, nlink) = if ino == ROOT {
        (libc::S_IFDIR | 0o755, 0u64, 2u32)
    } else {
        (libc::S_IFREG | 0o444, 4096u64, 1u32)
    };
    for v in [ino, size, size.div_ceil(512), 0, 0, 0] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    // atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
    for v in [0, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One reply: fuse_out_header (len, error, unique) and the body.
fn reply(dev: &File, unique: u64, error: i32, body: &[u8]) {
    let mut b = Vec::with_capacity(16 + body.len());
    b.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
    b.extend_from_slice(&error.to_ne_bytes());
    b.extend_from_slice(&unique.to_ne_bytes());
    b.extend_from_slice(body);
    // SAFETY: writes one whole reply from a valid buffer; an error (an aborted connection,
    // a request interrupted meanwhile) is the kernel's to handle.
    unsafe { libc::write(dev.as_raw_fd(), b.as_ptr().cast(), b.len()) };
}

fn serve(mut dev: File, reads: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match dev.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            // ENODEV: unmounted or aborted.
            Err(_) => return,
        };
        let req = &buf[..n];
        if req.len() < 40 {
            return;
        }
        let opcode = u32_at(req, 4);
        let unique = u64_at(req, 8);
        let node = u64_at(req, 16);
        let arg = &req[40..];
        match opcode {
            FUSE_INIT => {
                let mut b = Vec::new();
                // major, minor, max_readahead (0: a fault reads its page only), flags
                for v in [7u32, 31, 0, 0] {
                    b.extend_from_slice(&v.to_ne_bytes());
                }
                b.extend_from_slice(&1u16.to_ne_bytes()); // max_background
                b.extend_from_slice(&1u16.to_ne_bytes()); // congestion_threshold
                b.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
                b.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
                b.extend_from_slice(&1u16.to_ne_bytes()); // max_pages
                b.extend_from_slice(&0u16.to_ne_bytes()); // map_alignment
                b.extend_from_slice(&[0u8; 4 + 28]); // flags2, unused
                reply(&dev, unique, 0, &b);
            }
            FUSE_LOOKUP => {
                let name = arg.split(|&c| c == 0).next().unwrap_or_default();
                if node == ROOT && name == FILE_NAME.as_bytes() {
                    let mut b = Vec::new();
                    // nodeid, generation, entry_valid, attr_valid, their nsecs
                    for v in [FILE_NODE, 0, 3600, 3600] {
                        b.extend_from_slice(&v.to_ne_bytes());
                    }
                    b.extend_from_slice(&[0u8; 8]);
                    put_attr(&mut b, FILE_NODE);
                    reply(&dev, unique, 0, &b);
                } else {
                    reply(&dev, unique, -libc::ENOENT, &[]);
                }
            }
            FUSE_GETATTR => {
                let mut b = Vec::new();
                b.extend_from_slice(&3600u64.to_ne_bytes());
                b.extend_from_slice(&[0u8; 8]);
                put_attr(&mut b, if node == ROOT { ROOT } else { FILE_NODE });
                reply(&dev, unique, 0, &b);
            }
            FUSE_OPEN | FUSE_OPENDIR => {
                let mut b = Vec::new();
                b.extend_from_slice(&1u64.to_ne_bytes()); // fh
                b.extend_from_slice(&[0u8; 8]); // open_flags, padding
                reply(&dev, unique, 0, &b);
            }
            FUSE_READ => {
                // Never answered: whoever faults the page in waits for the abort.
                reads.fetch_add(1, Ordering::SeqCst);
            }
            FUSE_FLUSH | FUSE_RELEASE | FUSE_RELEASEDIR => reply(&dev, unique, 0, &[]),
            FUSE_FORGET | FUSE_BATCH_FORGET | FUSE_INTERRUPT | FUSE_DESTROY => {}
            _ => reply(&dev, unique, -libc::ENOSYS, &[]),
        }
    }
}

impl HangFs {
    /// Mounts it (root only). Panics saying what is missing: /dev/fuse, the fuse file system,
    /// the fusectl connections directory.
    pub fn mount() -> Self {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is absent: this test needs FUSE (CONFIG_FUSE_FS, `modprobe fuse`)"
        );
        let fs = std::fs::read_to_string("/proc/filesystems").expect("read /proc/filesystems");
        assert!(
            fs.lines()
                .any(|l| l.split_whitespace().last() == Some("fuse")),
            "the kernel has no `fuse` file system (CONFIG_FUSE_FS, `modprobe fuse`)"
        );
        if !is_mountpoint(Path::new(CONNECTIONS)) {
            let st = std::process::Command::new("mount")
                .args(["-t", "fusectl", "fusectl", CONNECTIONS])
                .status()
                .expect("run mount -t fusectl");
            assert!(
                st.success(),
                "cannot mount fusectl on {CONNECTIONS} (needed to abort the hanging connection)"
            );
        }
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap_or_else(|e| panic!("open /dev/fuse: {e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mkdir the mount point");
        let target = CString::new(mountpoint.as_os_str().as_encoded_bytes()).expect("path");
        let opts = CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            dev.as_raw_fd()
        ))
        .expect("options");
        // SAFETY: valid NUL-terminated strings; a new mount on a directory of our own.
        let rc = unsafe {
            libc::mount(
                c"podtrace-hang".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount a FUSE file system on {}: {}",
            mountpoint.display(),
            std::io::Error::last_os_error()
        );
        let reads = Arc::new(AtomicU64::new(0));
        let server = {
            let reads = Arc::clone(&reads);
            std::thread::Builder::new()
                .name("fuse-hang".into())
                .spawn(move || serve(dev, reads))
                .expect("start the FUSE server thread")
        };
        let conn = std::fs::metadata(&mountpoint)
            .map(|m| libc::minor(m.dev()))
            .unwrap_or_else(|e| panic!("stat {}: {e}", mountpoint.display()));
        let me = Self {
            mountpoint,
            _dir: dir,
            conn,
            reads,
            server: Some(server),
        };
        assert!(
            Path::new(CONNECTIONS)
                .join(conn.to_string())
                .join("abort")
                .exists(),
            "no {CONNECTIONS}/{conn}/abort for the new FUSE connection"
        );
        me
    }

    pub fn file(&self) -> PathBuf {
        self.mountpoint.join(FILE_NAME)
    }

    /// READ requests left unanswered so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }

    /// Ends every wait on the file system (the waiters get ENOTCONN/EIO).
    pub fn abort(&self) {
        let _ = std::fs::write(
            Path::new(CONNECTIONS)
                .join(self.conn.to_string())
                .join("abort"),
            "1",
        );
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let p = p.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(p.as_ref()))
}

impl Drop for HangFs {
    fn drop(&mut self) {
        self.abort();
        if let Ok(target) = CString::new(self.mountpoint.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid path; a lazy unmount of our own mount.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

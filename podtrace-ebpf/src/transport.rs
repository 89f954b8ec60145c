//! How records reach the daemon: the BPF ring buffer (Linux 5.8 and later), or, built with the
//! `perf-buffer` feature, the per-CPU perf buffers every kernel with BPF has. The daemon embeds
//! both objects and loads the ring-buffer one where the kernel can create the map.
//!
//! Both send the same bytes: a record is as long as its content. (The perf buffer pads each
//! sample to 8 bytes; the daemon trims that by the record's own lengths.)

#[cfg(not(feature = "perf-buffer"))]
pub use ring::*;

#[cfg(feature = "perf-buffer")]
pub use perf::*;

#[cfg(not(feature = "perf-buffer"))]
mod ring {
    use aya_ebpf::{macros::map, maps::RingBuf, EbpfContext};
    use podtrace_common::EventHeader;

    /// Events to userspace. The daemon sets the size at load time (`--ring-buffer-bytes`).
    #[map]
    static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

    /// Room for one header-only record, written in place and then sent.
    pub struct Slot(aya_ebpf::maps::ring_buf::RingBufEntry<EventHeader>);

    impl Slot {
        /// A header's room in the ring buffer (None: no room; nothing was taken).
        #[inline(always)]
        pub fn reserve() -> Option<Self> {
            EVENTS.reserve::<EventHeader>(0).map(Slot)
        }

        #[inline(always)]
        pub fn header(&mut self) -> *mut EventHeader {
            self.0.as_mut_ptr()
        }

        /// Sends it (`wake`: a `podtrace_common::ringbuf` flag); always delivered.
        #[inline(always)]
        pub fn send<C: EbpfContext>(self, _ctx: &C, wake: u64) -> bool {
            self.0.submit(wake);
            true
        }
    }

    /// Sends a record copied from elsewhere; false when the ring buffer had no room.
    #[inline(always)]
    pub fn send_bytes<C: EbpfContext>(_ctx: &C, bytes: &[u8], wake: u64) -> bool {
        EVENTS.output::<[u8]>(bytes, wake).is_ok()
    }
}

#[cfg(feature = "perf-buffer")]
mod perf {
    use aya_ebpf::{
        bindings::BPF_F_CURRENT_CPU, helpers::generated::bpf_perf_event_output, macros::map,
        maps::PerCpuArray, maps::PerfEventByteArray, EbpfContext,
    };
    use podtrace_common::{EventHeader, HEADER_LEN};

    /// Events to userspace: one perf buffer per CPU (the daemon opens them). Not named
    /// `EVENTS` like the ring buffer: the daemon's settings for that map must not reach this.
    #[map]
    static PERF_EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

    /// A header is built here, then copied out (a perf buffer has no reserve).
    #[map]
    static HEADER: PerCpuArray<EventHeader> = PerCpuArray::with_max_entries(1, 0);

    /// Room for one header-only record: this CPU's scratch header.
    pub struct Slot(*mut EventHeader);

    impl Slot {
        #[inline(always)]
        pub fn reserve() -> Option<Self> {
            HEADER.get_ptr_mut(0).map(Slot)
        }

        #[inline(always)]
        pub fn header(&mut self) -> *mut EventHeader {
            self.0
        }

        /// Copies it to this CPU's perf buffer; false when that buffer had no room.
        #[inline(always)]
        pub fn send<C: EbpfContext>(self, ctx: &C, wake: u64) -> bool {
            // SAFETY: a per-CPU map value of HEADER_LEN bytes, used by this program only.
            let bytes = unsafe { core::slice::from_raw_parts(self.0.cast::<u8>(), HEADER_LEN) };
            send_bytes(ctx, bytes, wake)
        }
    }

    /// Copies a record to this CPU's perf buffer; false when it had no room. (Perf buffers
    /// wake the reader by their own setting: `_wake` is the ring buffer's.)
    #[inline(always)]
    pub fn send_bytes<C: EbpfContext>(ctx: &C, bytes: &[u8], _wake: u64) -> bool {
        // SAFETY: the map is a perf event array; `bytes` is readable for its length.
        let ret = unsafe {
            bpf_perf_event_output(
                ctx.as_ptr(),
                (&raw const PERF_EVENTS).cast_mut().cast(),
                BPF_F_CURRENT_CPU,
                bytes.as_ptr().cast_mut().cast(),
                bytes.len() as u64,
            )
        };
        ret == 0
    }
}

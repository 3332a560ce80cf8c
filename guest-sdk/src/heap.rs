//! The plugin's memory allocator (feature `heap`, on by default): small blocks come from
//! a fixed arena inside the component's initial memory, larger ones from the standard
//! allocator.
//!
//! Why not the standard allocator alone: the host may give every request a fresh
//! instance, and the standard allocator (wasi-libc's `dlmalloc`) spent half of the example
//! plugin's Wasm instructions on a booking: one allocation for each of the Book Job's
//! strings and lists as the host lowers it into the guest, and the rules' own. An
//! allocator that grows the memory to get its space is worse still: growing a fresh
//! instance's memory costs the host a change of page protection on the way in and out,
//! more than the allocations it saves. So the arena is a static array, part of the memory
//! every instance starts with; only the pages a call touches cost the host anything.
//!
//! Blocks are sized in powers of two from 16 bytes to 4 KiB. A freed block goes on the
//! free list of its size and is the next one handed out at that size, so an instance the
//! host reuses for many calls (`reuse_instances`) recycles its blocks instead of growing;
//! a request larger than 4 KiB, or one that finds the arena used up, goes to the standard
//! allocator.
//!
//! A plugin that brings its own `#[global_allocator]` turns this off with
//! `default-features = false` on the SDK.

#![allow(unsafe_code, reason = "a memory allocator")]
#![cfg_attr(
    not(target_arch = "wasm32"),
    allow(dead_code, reason = "natively only the tests use the arena")
)]

use std::alloc::Layout;

/// The smallest block: room for a free list's link, and the alignment of any scalar.
const MIN_BLOCK: usize = 16;
/// The largest block the arena hands out; larger requests go to the standard allocator.
const MAX_BLOCK: usize = 4096;
/// One free list per block size: 16, 32, ..., 4096.
const CLASSES: usize = (MAX_BLOCK.trailing_zeros() - MIN_BLOCK.trailing_zeros() + 1) as usize;

/// Size-class bookkeeping over one contiguous region of memory. It never touches memory
/// outside the region, and writes into a block only while the block is free (its
/// free-list link, in its first word).
#[derive(Debug)]
pub(crate) struct Arena {
    start: *mut u8,
    len: usize,
    /// Offset of the first never-used byte.
    next: usize,
    /// Head of each size's free list (null: empty); each free block holds the next one's
    /// address in its first word.
    free: [*mut u8; CLASSES],
}

impl Arena {
    /// An arena over the `len` bytes at `start`, which must be aligned to 4 KiB: a block
    /// is aligned to its size by its offset from there.
    pub(crate) const fn new(start: *mut u8, len: usize) -> Arena {
        Arena {
            start,
            len,
            next: 0,
            free: [std::ptr::null_mut(); CLASSES],
        }
    }

    /// Which size class serves `layout`, if the arena serves it at all: the smallest
    /// power of two that holds it and is at least its alignment (blocks are aligned to
    /// their size). Powers of two keep this and the block's placement a few instructions;
    /// what they waste is a few KiB of a booking's arena.
    #[inline]
    fn class(layout: Layout) -> Option<usize> {
        let size = layout.size().max(layout.align()).max(MIN_BLOCK);
        if size > MAX_BLOCK {
            return None;
        }
        Some((size.next_power_of_two().trailing_zeros() - MIN_BLOCK.trailing_zeros()) as usize)
    }

    fn block_size(class: usize) -> usize {
        MIN_BLOCK << class
    }

    /// Whether `ptr` is one of this arena's blocks.
    #[inline]
    pub(crate) fn owns(&self, ptr: *mut u8) -> bool {
        (ptr as usize).wrapping_sub(self.start as usize) < self.len
    }

    /// A block for `layout`, or `None` when the arena does not serve that size or has no
    /// room left for it.
    #[inline]
    pub(crate) fn alloc(&mut self, layout: Layout) -> Option<*mut u8> {
        let class = Self::class(layout)?;
        let head = self.free[class];
        if !head.is_null() {
            // SAFETY: `head` is a free block of this arena (only `dealloc` links blocks,
            // and only blocks `owns` accepted), and its first word holds the next link.
            self.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return Some(head);
        }
        let size = Self::block_size(class);
        // `next` is at most `len` and a block at most 4 KiB: no sum here can overflow.
        let at = (self.next + size - 1) & !(size - 1);
        if at + size > self.len {
            return None;
        }
        self.next = at + size;
        Some(self.start.wrapping_add(at))
    }

    /// Returns a block to its size's free list.
    ///
    /// # Safety
    /// `ptr` must come from [`Arena::alloc`] on this arena with the same `layout`, and not
    /// be freed since.
    #[inline]
    pub(crate) unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            unreachable!("an arena block has an arena size")
        };
        // SAFETY: the block is at least 16 bytes, 16-aligned, and no longer in use.
        unsafe { ptr.cast::<*mut u8>().write(self.free[class]) };
        self.free[class] = ptr;
    }

    /// Whether a block allocated for `old` also serves `new_size` bytes: the arena would
    /// hand out a block of the same size for them, so freeing it later finds its list.
    #[inline]
    pub(crate) fn fits(old: Layout, new_size: usize) -> bool {
        match Layout::from_size_align(new_size, old.align()) {
            Ok(new) => Self::class(old) == Self::class(new),
            Err(_) => false,
        }
    }
}

/// The global allocator of a plugin built for WebAssembly: see the module docs.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod global {
    use super::Arena;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;

    /// Bytes of the arena. The example plugin's booking uses about 7 KiB of it; what a
    /// call never touches costs the host nothing, and what does not fit goes to the
    /// standard allocator.
    const ARENA_BYTES: usize = 256 << 10;

    #[repr(C, align(4096))]
    struct Region([u8; ARENA_BYTES]);

    /// Zero-initialised, so it takes no space in the component: it is part of the memory
    /// every instance starts with.
    static mut REGION: Region = Region([0; ARENA_BYTES]);

    struct Heap {
        arena: UnsafeCell<Arena>,
    }

    // SAFETY: a component without the `atomics` feature has one thread.
    unsafe impl Sync for Heap {}

    impl Heap {
        #[allow(
            clippy::mut_from_ref,
            reason = "one thread; each use ends before the next"
        )]
        #[inline]
        fn arena(&self) -> &mut Arena {
            // SAFETY: one thread, and no caller holds the reference across another call.
            unsafe { &mut *self.arena.get() }
        }
    }

    // SAFETY: every block is either the arena's (inside `REGION`, handed out once until
    // freed) or the standard allocator's; `Arena::owns` tells them apart on free.
    unsafe impl GlobalAlloc for Heap {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match self.arena().alloc(layout) {
                Some(ptr) => ptr,
                // SAFETY: forwarded with the caller's layout.
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let arena = self.arena();
            if arena.owns(ptr) {
                // SAFETY: the caller's block and layout, allocated by the arena.
                unsafe { arena.dealloc(ptr, layout) }
            } else {
                // SAFETY: not the arena's, so the standard allocator's.
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if !self.arena().owns(ptr) {
                // SAFETY: the standard allocator's block; it keeps what it can in place.
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            if Arena::fits(layout, new_size) {
                return ptr;
            }
            // SAFETY: `new_size` with the old alignment is a valid layout (the caller's
            // contract for `realloc`).
            let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: as in `alloc`.
            let to = unsafe { self.alloc(new) };
            if !to.is_null() {
                // SAFETY: both blocks hold at least the smaller size and do not overlap
                // (the old one is still allocated).
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                    self.arena().dealloc(ptr, layout);
                }
            }
            to
        }
    }

    #[global_allocator]
    static HEAP: Heap = Heap {
        arena: UnsafeCell::new(Arena::new((&raw mut REGION).cast(), ARENA_BYTES)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Clone)]
    #[repr(align(4096))]
    struct Page([u8; 4096]);

    /// A region to run an arena over, 4 KiB-aligned like the real one.
    fn region(bytes: usize) -> Vec<Page> {
        vec![Page([0; 4096]); bytes / 4096]
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn each_layout_gets_the_smallest_block_that_holds_and_aligns_it() {
        let mut last = 0;
        for size in 1..=MAX_BLOCK {
            let class = Arena::class(layout(size, 1)).unwrap();
            assert!(class < CLASSES);
            assert!(Arena::block_size(class) >= size, "{size} in class {class}");
            assert!(
                class == 0 || Arena::block_size(class - 1) < size,
                "{size}: smaller fits"
            );
            assert!(
                class == last || class == last + 1,
                "{size}: classes are consecutive"
            );
            last = class;
        }
        assert_eq!(last, CLASSES - 1);
        assert_eq!(Arena::class(layout(8, 64)), Arena::class(layout(64, 1)));
        assert_eq!(Arena::class(layout(4097, 1)), None);
        assert_eq!(Arena::class(layout(8, 8192)), None);
    }

    #[test]
    fn blocks_are_aligned_to_their_size_and_inside_the_region() {
        let mut mem = region(64 << 10);
        let start = mem.as_mut_ptr() as usize;
        let mut arena = Arena::new(mem.as_mut_ptr().cast(), 64 << 10);
        for (size, align) in [(1, 1), (17, 8), (100, 4), (24, 16), (8, 64), (4096, 1)] {
            let ptr = arena.alloc(layout(size, align)).unwrap() as usize;
            let block = size.max(align).max(MIN_BLOCK).next_power_of_two();
            assert_eq!(ptr % block, 0, "{size}/{align} at {ptr:#x}");
            assert!(ptr >= start && ptr + block <= start + (64 << 10));
        }
    }

    #[test]
    fn a_freed_block_is_the_next_one_of_its_size() {
        let mut mem = region(16 << 10);
        let mut arena = Arena::new(mem.as_mut_ptr().cast(), 16 << 10);
        let a = arena.alloc(layout(40, 8)).unwrap();
        let b = arena.alloc(layout(40, 8)).unwrap();
        let other = arena.alloc(layout(200, 8)).unwrap();
        assert_eq!(b, a.wrapping_add(64));
        assert_eq!(other, a.wrapping_add(256), "aligned to its 256 bytes");
        // SAFETY: `a` came from this arena with this layout.
        unsafe { arena.dealloc(a, layout(40, 8)) };
        assert_eq!(
            arena.alloc(layout(33, 1)).unwrap(),
            a,
            "33 bytes take a 64-byte block"
        );
        assert_eq!(arena.alloc(layout(64, 8)).unwrap(), other.wrapping_add(256));
    }

    #[test]
    fn large_requests_and_an_exhausted_arena_are_left_to_the_standard_allocator() {
        let mut mem = region(8 << 10);
        let mut arena = Arena::new(mem.as_mut_ptr().cast(), 8 << 10);
        assert!(arena.alloc(layout(4097, 8)).is_none());
        let small = arena.alloc(layout(16, 8)).unwrap();
        assert_eq!(
            arena.alloc(layout(4096, 8)),
            Some(small.wrapping_add(4096)),
            "aligned"
        );
        assert!(arena.alloc(layout(2048, 8)).is_none(), "the region is full");
        assert!(arena.alloc(layout(16, 8)).is_none(), "the region is full");
        // SAFETY: `small` came from this arena with this layout.
        unsafe { arena.dealloc(small, layout(16, 8)) };
        assert_eq!(
            arena.alloc(layout(10, 2)),
            Some(small),
            "but its free blocks are reused"
        );
        assert!(!arena.owns(std::ptr::null_mut()));
    }

    #[test]
    fn resizing_in_place_keeps_the_block_the_size_would_get() {
        assert!(Arena::fits(layout(20, 8), 32));
        assert!(!Arena::fits(layout(20, 8), 33));
        assert!(Arena::fits(layout(3000, 1), 4096));
        assert!(!Arena::fits(layout(3000, 1), 4097));
        assert!(
            Arena::fits(layout(100, 8), 70),
            "shrinking within the block"
        );
        assert!(
            !Arena::fits(layout(100, 8), 10),
            "shrinking to a smaller block moves"
        );
    }

    /// Random allocations, resizes in place and frees of every size class: live blocks
    /// never overlap, stay inside the region, and keep what was written into them until
    /// they are freed.
    #[test]
    fn live_blocks_never_overlap_and_keep_their_contents() {
        const LEN: usize = 64 << 10;
        let mut mem = region(LEN);
        let start = mem.as_mut_ptr() as usize;
        let mut arena = Arena::new(mem.as_mut_ptr().cast(), LEN);
        let mut live: BTreeMap<usize, (Layout, u8)> = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut served, mut full) = (0, 0);
        for step in 0..200_000u32 {
            if next() % 2 == 0 || live.is_empty() {
                let size = 1 + (next() % 5000) as usize;
                let align = 1 << (next() % 7);
                let l = layout(size, align);
                let Some(ptr) = arena.alloc(l) else {
                    full += usize::from(size <= MAX_BLOCK && align <= MAX_BLOCK);
                    continue;
                };
                served += 1;
                let at = ptr as usize;
                assert_eq!(at % align, 0);
                assert!(at >= start && at + size <= start + LEN);
                if let Some((&before, &(bl, _))) = live.range(..at).next_back() {
                    assert!(before + bl.size() <= at, "overlaps the block before");
                }
                if let Some((&after, _)) = live.range(at..).next() {
                    assert!(at + size <= after, "overlaps the block after");
                }
                let fill = step as u8;
                // SAFETY: the block holds `size` bytes and is ours until freed.
                unsafe { std::ptr::write_bytes(ptr, fill, size) };
                live.insert(at, (l, fill));
            } else {
                let key = *live.keys().nth((next() as usize) % live.len()).unwrap();
                let (l, fill) = live.remove(&key).unwrap();
                // SAFETY: a live block of ours, `l.size()` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(key as *const u8, l.size()) };
                assert!(
                    bytes.iter().all(|&b| b == fill),
                    "a live block was overwritten"
                );
                let new_size = 1 + (next() % 5000) as usize;
                if next() % 2 == 0 && Arena::fits(l, new_size) {
                    let l = layout(new_size, l.align());
                    if let Some((&after, _)) = live.range(key + 1..).next() {
                        assert!(key + new_size <= after, "resized over the block after");
                    }
                    assert!(key + new_size <= start + LEN);
                    // SAFETY: the block holds `new_size` bytes (`fits`).
                    unsafe { std::ptr::write_bytes(key as *mut u8, fill, new_size) };
                    live.insert(key, (l, fill));
                    continue;
                }
                // SAFETY: allocated by this arena with `l`, freed once.
                unsafe { arena.dealloc(key as *mut u8, l) };
            }
        }
        assert!(served > 50_000, "the arena served {served}");
        assert!(full > 0, "the test never filled the region");
    }
}

//! The forward pass allocates nothing per token: after the first few tokens (buffers and
//! the thread pool warm), generating more tokens makes no heap allocation at all. And the
//! memory check before a context is allocated counts what `Context::new` allocates.
//! Its own test binary, so the global allocation counter sees only this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use loupe::store::GEMMA3_270M;
use loupe_engine::model::kv_cache::{KvType, KvTypes};
use loupe_engine::model::{memory, Context, Logits, Model, RunOptions};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(n.saturating_sub(l.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn generating_tokens_allocates_nothing() {
    let path = GEMMA3_270M.path();
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    let model = Model::load(&path).unwrap();
    // The background repack allocates (on its own thread, off the token path): let it end.
    model.wait_repacked();
    let opts = RunOptions {
        n_ctx: 64,
        kv_type: KvTypes::F16,
        threads: 2,
        batch: 16,
    };
    let bytes = BYTES.load(Ordering::Relaxed);
    let mut ctx = Context::new(&model, opts).unwrap();
    // What the memory check counted: at least what was allocated (it also counts buffers
    // that grow later), and of the same size.
    let allocated = BYTES.load(Ordering::Relaxed) - bytes;
    let counted = memory::context_bytes(&model, &opts).unwrap() as usize;
    assert!(
        allocated <= counted && counted <= 2 * allocated,
        "Context::new allocated {allocated} bytes, the memory check counts {counted}"
    );
    ctx.eval(&[2, 818, 5279, 529], Logits::Last).unwrap();
    for t in 0..4 {
        ctx.eval(&[100 + t], Logits::Last).unwrap();
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for t in 0..8 {
        ctx.eval(&[200 + t], Logits::Last).unwrap();
    }
    let n = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(n, 0, "8 generated tokens made {n} heap allocations");

    // At a longer context one token's keys are split across the threads, and a block
    // cache dequantizes its values: neither may allocate either. (In this test, not a
    // second one: the counters see every thread of the process.)
    for t in [KvType::F16, KvType::Q8_0] {
        let opts = RunOptions {
            n_ctx: 1024,
            kv_type: KvTypes::same(t),
            threads: 2,
            batch: 512,
        };
        let mut ctx = Context::new(&model, opts).unwrap();
        let prompt: Vec<u32> = (0..600).map(|i| 300 + i).collect();
        ctx.eval(&prompt, Logits::Last).unwrap();
        ctx.eval(&[100], Logits::Last).unwrap();
        let before = ALLOCS.load(Ordering::Relaxed);
        for t in 0..8 {
            ctx.eval(&[200 + t], Logits::Last).unwrap();
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        assert_eq!(
            n, 0,
            "{t} cache: 8 tokens at position 600 made {n} heap allocations"
        );
    }
}

// Scratch memory of the CPU kernels (partial sums, coefficient arrays), reused from call to
// call.
//
// Each thread that calls pybn keeps one buffer (its arena). A call's scratch blocks are cut
// from it one after another, 64-byte aligned, and the whole arena is free again once the
// call's last block is released. The kernels ask for the same sizes in the same order for the
// same shape, so every block lands at the same address call after call: the arrays an OpenMP
// thread used in the last call are still in its own core's cache, where fresh allocations
// from malloc would come back shuffled between the threads and be fetched from the other
// core (and malloc, free and page faults cost microseconds per call: float16 256x1024
// training, 2 threads, spent 3.3 of its 43 us allocating).
//
// A call needing more than the arena holds takes the rest from the heap, and the arena grows
// to that call's total for the next one, up to kScratchArenaMaxBytes (calls that large spend
// milliseconds computing; the heap is cheap for them). The arena is freed when its thread
// exits, or by pybn_cpu_release_scratch(). Blocks are allocated and released on the calling
// thread, outside parallel regions.
#pragma once

#include <cstddef>

namespace pybn {

constexpr size_t kScratchArenaMaxBytes = size_t(4) << 20;  // kept per calling thread, at most

struct ScratchBlock {
  void *data = nullptr;
  void *owner = nullptr;  // the arena of the thread that acquired it
  bool from_heap = false;
};

// `bytes` (0 allowed) of uninitialized memory starting on a 64-byte line. Throws
// std::bad_alloc.
ScratchBlock scratch_acquire(size_t bytes);
void scratch_release(const ScratchBlock &block) noexcept;

// The calling thread's arena: its size, and freeing it (between calls; it grows again as
// calls need it). The C ABI's pybn_cpu_scratch_bytes / pybn_cpu_release_scratch.
size_t scratch_arena_bytes() noexcept;
void scratch_arena_free() noexcept;

}  // namespace pybn

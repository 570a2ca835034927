// The per-thread scratch arena (see scratch.hpp).
#include "scratch.hpp"

#include <algorithm>
#include <cstdint>
#include <new>

namespace pybn {
namespace {

constexpr size_t kLine = 64;

struct Arena {
  char *base = nullptr;
  size_t capacity = 0;
  size_t used = 0;         // bytes cut from the arena since it was last free
  size_t demand = 0;       // bytes asked for since then, arena and heap together
  size_t wanted = 0;       // the largest demand of a call so far: the size to grow to
  size_t outstanding = 0;  // blocks not yet released, arena and heap together

  ~Arena() { free(); }
  void free() noexcept {
    ::operator delete(base, std::align_val_t(kLine));
    base = nullptr;
    capacity = used = demand = wanted = 0;
  }

  // Between calls (nothing outstanding): grow to the largest demand seen, within the cap. A
  // failed allocation leaves the arena as it was; the heap serves what it cannot.
  void grow_if_wanted() {
    const size_t target = std::min(wanted, kScratchArenaMaxBytes);
    if (target <= capacity) return;
    char *bigger = static_cast<char *>(::operator new(target, std::align_val_t(kLine), std::nothrow));
    if (bigger == nullptr) return;
    ::operator delete(base, std::align_val_t(kLine));
    base = bigger;
    capacity = target;
  }
};

thread_local Arena arena;

}  // namespace

ScratchBlock scratch_acquire(size_t bytes) {
  Arena &a = arena;
  if (a.outstanding == 0) a.grow_if_wanted();
  if (bytes > SIZE_MAX - kLine) throw std::bad_alloc();  // no size rounds up past SIZE_MAX
  const size_t rounded = (std::max<size_t>(bytes, 1) + kLine - 1) / kLine * kLine;
  ScratchBlock block;
  block.owner = &a;
  if (rounded <= a.capacity - a.used) {
    block.data = a.base + a.used;
    a.used += rounded;
  } else {
    block.data = ::operator new(rounded, std::align_val_t(kLine));  // may throw: nothing counted yet
    block.from_heap = true;
  }
  a.demand += rounded;
  ++a.outstanding;
  return block;
}

void scratch_release(const ScratchBlock &block) noexcept {
  if (block.data == nullptr) return;
  // The acquiring thread's counts: the kernels acquire and release scratch on the calling
  // thread, never concurrently.
  Arena &a = *static_cast<Arena *>(block.owner);
  if (block.from_heap) ::operator delete(block.data, std::align_val_t(kLine));
  if (a.outstanding > 0 && --a.outstanding == 0) {
    a.wanted = std::max(a.wanted, a.demand);
    a.used = a.demand = 0;
  }
}

size_t scratch_arena_bytes() noexcept { return arena.capacity; }

void scratch_arena_free() noexcept {
  if (arena.outstanding == 0) arena.free();  // always so between calls
}

}  // namespace pybn

// Host memory for outputs: the cache of large blocks behind pybn_host_alloc (see pybn.h for
// the contract, abi.cpp for the entry points).
//
// Why a cache: the kernels write a 103 MB float32 output in ~5 ms, but a block fresh from the
// system is faulted in page by page on that first write, the system zeroing every page: ~15 ms
// more on our 2-core machine, even with huge pages. glibc returns blocks this large to the
// system on free (its mmap threshold tops out at 32 MB), so a loop allocating an output per
// call pays that every time. Kept blocks skip it from the second call on.
//
// Every block has a 64-byte header just before its data, so that free and realloc need no
// table: small blocks (under PYBN_HOST_CACHE_MIN_BYTES) come from aligned operator new with
// the header in front; large ones are a whole number of huge pages (their size class), the
// data one 4 KB page in (page-aligned, the header at the end of that first page).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#endif

#include "host_memory.hpp"

#include "pybn/pybn.h"

namespace pybn {
namespace {

constexpr size_t kHeaderBytes = 64;
constexpr size_t kLargeOffset = 4096;             // data offset in a large block
constexpr size_t kSizeClass = size_t(2) << 20;    // large blocks: multiples of a huge page
constexpr size_t kDefaultLimit = size_t(1024) << 20;
constexpr uint64_t kMagic = 0x70796e6e686f7374;   // "pybnhost": a cheap check on free

struct alignas(kHeaderBytes) Header {
  void *base;         // what operator new returned
  size_t footprint;   // bytes allocated at base; for large blocks the cache's size class
  size_t usable;      // bytes the caller asked for (what realloc copies)
  uint64_t magic;
  bool large;
};
static_assert(sizeof(Header) == kHeaderBytes, "the header is one line");

Header *header_of(void *data) { return static_cast<Header *>(data) - 1; }
const Header *header_of(const void *data) { return static_cast<const Header *>(data) - 1; }

size_t limit_from_environment() {
  const char *text = std::getenv("PYBN_HOST_CACHE_MB");
  if (text == nullptr || *text == '\0') return kDefaultLimit;
  char *end = nullptr;
  const unsigned long long mib = std::strtoull(text, &end, 10);
  if (*end != '\0' || mib > (SIZE_MAX >> 20)) return kDefaultLimit;  // not a number of MiB
  return static_cast<size_t>(mib) << 20;
}

class HostCache {
 public:
  // fork() copies only the calling thread: a mutex another thread held at that moment would
  // stay locked in the child forever. Held across the fork, it is the forking thread's to
  // release on both sides.
  void lock_for_fork() { mutex_.lock(); }
  void unlock_after_fork() { mutex_.unlock(); }

  void *allocate(size_t bytes) noexcept {
    if (bytes < PYBN_HOST_CACHE_MIN_BYTES) return allocate_small(bytes);
    if (bytes > SIZE_MAX - kLargeOffset - kSizeClass) return nullptr;
    const size_t footprint = (bytes + kLargeOffset + kSizeClass - 1) / kSizeClass * kSizeClass;
    void *base = take_idle(footprint);
    if (base == nullptr) base = allocate_large(footprint);
    if (base == nullptr) {  // the system may have room once our idle blocks are gone
      release();
      base = allocate_large(footprint);
    }
    if (base == nullptr) return nullptr;
    return finish(base, footprint, bytes, kLargeOffset, true);
  }

  void give_back(void *data) noexcept {
    if (data == nullptr) return;
    Header *h = header_of(data);
    // A large block freed twice while idle in the cache: nothing to do (other double frees are
    // undefined, as pybn.h says: their header may be gone or belong to a new block).
    if (h->magic != kMagic) return;
    h->magic = 0;
    if (!h->large) {
      ::operator delete(h->base, std::align_val_t(kHeaderBytes));
      return;
    }
    bool kept = false;
    change_then_trim([&] {
      try {
        idle_.push_back({h->base, h->footprint});
        idle_bytes_ += h->footprint;
        kept = true;
      } catch (...) {  // no memory to grow the list: this block goes back to the system (below)
      }
      return limit_;
    });
    if (!kept) free_large(h->base);
  }

  void *reallocate(void *data, size_t bytes) noexcept {
    if (data == nullptr) return allocate(bytes);
    Header *h = header_of(data);
    if (h->magic != kMagic) return nullptr;
    // A large block that has room keeps its place (its size class does not shrink: a block
    // resized down keeps its pages, as realloc may).
    if (h->large && bytes >= PYBN_HOST_CACHE_MIN_BYTES && bytes <= h->footprint - kLargeOffset) {
      h->usable = bytes;
      return data;
    }
    void *moved = allocate(bytes);
    if (moved == nullptr) return nullptr;
    std::memcpy(moved, data, std::min(bytes, h->usable));
    give_back(data);
    return moved;
  }

  size_t idle_bytes() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return idle_bytes_;
  }

  size_t limit() noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit_;
  }

  void set_limit(size_t bytes) noexcept {
    change_then_trim([&] { return limit_ = bytes; });
  }

  void release() noexcept {
    change_then_trim([] { return size_t(0); });
  }

 private:
  struct Idle {
    void *base;
    size_t footprint;
  };

  static void *allocate_small(size_t bytes) noexcept {
    const size_t footprint = kHeaderBytes + std::max<size_t>(bytes, 1);
    if (footprint < bytes) return nullptr;  // wrapped
    void *base = ::operator new(footprint, std::align_val_t(kHeaderBytes), std::nothrow);
    if (base == nullptr) return nullptr;
    return finish(base, footprint, bytes, kHeaderBytes, false);
  }

  static void *allocate_large(size_t footprint) noexcept {
    void *base = ::operator new(footprint, std::align_val_t(kSizeClass), std::nothrow);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Where transparent huge pages are "madvise" (the common default), a 2 MiB page per fault
    // instead of 512 faults; NumPy does the same for its large arrays. Only advice.
    if (base != nullptr) madvise(base, footprint, MADV_HUGEPAGE);
#endif
    return base;
  }

  static void free_large(void *base) noexcept { ::operator delete(base, std::align_val_t(kSizeClass)); }

  static void *finish(void *base, size_t footprint, size_t usable, size_t offset, bool large) noexcept {
    void *data = static_cast<char *>(base) + offset;
    Header *h = header_of(data);
    h->base = base;
    h->footprint = footprint;
    h->usable = usable;
    h->magic = kMagic;
    h->large = large;
    return data;
  }

  // The most recently idle block of this size class (its pages the likeliest still in cache).
  void *take_idle(size_t footprint) noexcept {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = idle_.size(); i-- > 0;) {
      if (idle_[i].footprint != footprint) continue;
      void *base = idle_[i].base;
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
      idle_bytes_ -= footprint;
      return base;
    }
    return nullptr;
  }

  // change() runs under the lock and returns how many idle bytes may stay; the longest idle
  // blocks past that are taken out under the lock and freed after it: freeing a block takes
  // 0.25-1.3 ms at 100 MB, 1.1-3.6 ms at 400 MB, too long to hold up other threads' allocations.
  template <class Change> void change_then_trim(Change change) noexcept {
    std::vector<void *> evicted;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const size_t keep = change();
      evict_past(keep, evicted);
    }
    for (void *base : evicted) free_large(base);
  }

  // Moves the longest idle blocks out until at most `keep` idle bytes remain (into `evicted`).
  void evict_past(size_t keep, std::vector<void *> &evicted) noexcept {
    size_t n = 0;
    while (n < idle_.size() && idle_bytes_ > keep) {
      idle_bytes_ -= idle_[n].footprint;
      ++n;
    }
    try {
      evicted.reserve(n);
    } catch (...) {  // no memory for a list of pointers: free them here, lock or not
      for (size_t i = 0; i < n; ++i) free_large(idle_[i].base);
      idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(n));
      return;
    }
    for (size_t i = 0; i < n; ++i) evicted.push_back(idle_[i].base);
    idle_.erase(idle_.begin(), idle_.begin() + static_cast<std::ptrdiff_t>(n));
  }

  std::mutex mutex_;
  std::vector<Idle> idle_;  // in the order they became idle
  size_t idle_bytes_ = 0;
  size_t limit_ = limit_from_environment();
};

HostCache &cache();

HostCache *make_cache() {
  HostCache *made = new HostCache;
#if defined(__unix__) || defined(__APPLE__)
  pthread_atfork([] { cache().lock_for_fork(); }, [] { cache().unlock_after_fork(); },
                 [] { cache().unlock_after_fork(); });
#endif
  return made;
}

// Never destroyed: NumPy arrays holding blocks may be freed while the process exits, after
// static destructors would have run. Idle blocks go back to the system with the process.
HostCache &cache() {
  static HostCache *instance = make_cache();
  return *instance;
}

}  // namespace

void *host_allocate(size_t bytes) noexcept { return cache().allocate(bytes); }
void *host_reallocate(void *data, size_t bytes) noexcept { return cache().reallocate(data, bytes); }
void host_free(void *data) noexcept { cache().give_back(data); }
bool host_block_is_live(const void *data) noexcept {
  return header_of(data)->magic == kMagic;
}
size_t host_cache_idle_bytes() noexcept { return cache().idle_bytes(); }
size_t host_cache_limit() noexcept { return cache().limit(); }
void host_cache_set_limit(size_t bytes) noexcept { cache().set_limit(bytes); }
void host_cache_release() noexcept { cache().release(); }

}  // namespace pybn

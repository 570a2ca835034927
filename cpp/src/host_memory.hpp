// Host memory for outputs (pybn_host_alloc and friends in pybn.h): blocks with a small header,
// large ones kept in a cache when given back. host_memory.cpp says why.
#pragma once

#include <cstddef>

namespace pybn {

// nullptr when out of memory; host_reallocate also when `data` is not a live block of ours.
void *host_allocate(size_t bytes) noexcept;
void *host_reallocate(void *data, size_t bytes) noexcept;
void host_free(void *data) noexcept;  // nullptr: nothing happens
// A best-effort check of data's header mark (data not null): false for a large block given
// back and still idle in the cache. Any other block given back may be unmapped or handed out
// again, so reading its header is undefined: a debugging aid, not a guarantee.
bool host_block_is_live(const void *data) noexcept;
size_t host_cache_idle_bytes() noexcept;
size_t host_cache_limit() noexcept;
void host_cache_set_limit(size_t bytes) noexcept;
void host_cache_release() noexcept;

}  // namespace pybn

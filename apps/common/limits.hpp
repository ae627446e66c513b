// Process set-up shared by the binaries.
#pragma once

#include <sys/resource.h>

namespace rstream::apps {

/// Raises the soft open-file limit to the hard limit: every stream holds descriptors.
inline void raise_open_file_limit() {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

} // namespace rstream::apps

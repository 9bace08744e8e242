/* ioplex — the whole public API. */
#ifndef IOPLEX_H
#define IOPLEX_H

#include "ioplex/common.h"
#include "ioplex/error.h"
#include "ioplex/alloc.h"
#include "ioplex/timer.h"
#include "ioplex/op.h"
#include "ioplex/watch.h"
#include "ioplex/loop.h"
#include "ioplex/plugin.h"
#include "ioplex/coro.h"
#include "ioplex/service.h"
#include "ioplex/shard.h"
#include "ioplex/plock.h"
#include "ioplex/shdict.h"
#include "ioplex/pqueue.h"
#include "ioplex/ppipe.h"
#include "ioplex/pool.h"

#define IOPLEX_VERSION_MAJOR 0
#define IOPLEX_VERSION_MINOR 1
#define IOPLEX_VERSION_PATCH 0
#define IOPLEX_VERSION "0.1.0"

#endif

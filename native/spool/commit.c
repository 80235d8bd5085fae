// The file half of a queue commit, as one job on libuv's thread pool: open the empty spare file (or create the file
// when there is no spare), write the whole queue file, fdatasync, close, rename into active/; and create the empty
// spare file a later commit will take (in the same trip to the pool instead of two more, open and close). Why in C: from
// JavaScript these are four calls on the event loop (open, write, close and rename only touch the page cache, but they
// cost ~80 µs of the loop per message, the rename the most) plus a trip to the pool for the fdatasync; here the loop
// makes one call and gets one callback. With syncDir, the job also makes the rename durable: the directory fsync,
// shared by the jobs of concurrent commits (group commit among the pool's threads, below), so that a commit is one
// trip to the pool, not two. Same steps and order as the JavaScript path in src/queue/spool.ts, which is used when
// this addon is not built; test/unit/queue/spool.test.ts runs its tests with both.
// Each pool thread that runs a job switches itself to SCHED_BATCH (below).
// Trusts its caller (src/queue/spool.ts): paths are inside the spool, the buffer is the complete queue file.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref data_ref;
  char *spare;  /* may be NULL */
  char *create; /* used when there is no spare, or it cannot be opened */
  char *dest;
  char *next_spare; /* may be NULL: an empty file to create for a later commit */
  const unsigned char *data;
  size_t len;
  /* results */
  int err;             /* errno of the failed step, 0 on success */
  const char *syscall; /* the failed step */
  int used_spare;
  int made_spare;
  int sync_dir;  /* fsync dest's directory after the rename (group commit) */
  int did_sync;  /* this job ran the directory fsync (others shared it) */
} job_t;

/*
 * Group commit of directory fsyncs among the thread pool's threads. A job whose rename is done takes a ticket; an fsync
 * started after the ticket was taken covers it. If no fsync is running, the job runs one, for every ticket taken so
 * far; otherwise it waits for the running one to end, and then either is covered (an fsync started after its ticket
 * was taken) or starts the next one. A failed fsync fails every job it was to cover (the file may not be durable).
 * One state per directory, made on demand and freed when no job uses it.
 */
typedef struct dirsync {
  struct dirsync *next;
  char *dir;
  int users;
  int running;
  unsigned long long taken;   /* tickets handed out */
  unsigned long long synced;  /* every ticket up to this one is durable */
  unsigned long long failed;  /* the last failed fsync was to cover tickets up to this one */
  int failed_err;
  pthread_cond_t done;
} dirsync_t;
static pthread_mutex_t dirsync_mu = PTHREAD_MUTEX_INITIALIZER;
static dirsync_t *dirsyncs;

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return err;
}

/* 0 once an fsync of dir that started after this call is done, else the errno of the fsync that failed. */
static int group_fsync_dir(const char *dir, int *did_sync) {
  pthread_mutex_lock(&dirsync_mu);
  dirsync_t *d = dirsyncs;
  while (d && strcmp(d->dir, dir) != 0) d = d->next;
  if (!d) {
    d = calloc(1, sizeof *d);
    char *name = d ? strdup(dir) : NULL;
    if (!name) {
      free(d);
      pthread_mutex_unlock(&dirsync_mu);
      *did_sync = 1;
      return fsync_dir(dir); /* no memory for the group: an fsync of its own */
    }
    d->dir = name;
    pthread_cond_init(&d->done, NULL);
    d->next = dirsyncs;
    dirsyncs = d;
  }
  d->users++;
  unsigned long long ticket = ++d->taken;
  int err = 0;
  for (;;) {
    if (d->synced >= ticket) break;
    if (d->failed >= ticket) {
      err = d->failed_err;
      break;
    }
    if (d->running) {
      pthread_cond_wait(&d->done, &dirsync_mu);
      continue;
    }
    d->running = 1;
    unsigned long long upto = d->taken;
    pthread_mutex_unlock(&dirsync_mu);
    int e = fsync_dir(dir);
    *did_sync = 1;
    pthread_mutex_lock(&dirsync_mu);
    d->running = 0;
    if (e == 0) d->synced = upto;
    else {
      d->failed = upto;
      d->failed_err = e;
    }
    pthread_cond_broadcast(&d->done);
  }
  if (--d->users == 0) {
    dirsync_t **pp = &dirsyncs;
    while (*pp != d) pp = &(*pp)->next;
    *pp = d->next;
    pthread_cond_destroy(&d->done);
    free(d->dir);
    free(d);
  }
  pthread_mutex_unlock(&dirsync_mu);
  return err;
}

static void job_free(napi_env env, job_t *j) {
  if (j->data_ref) napi_delete_reference(env, j->data_ref);
  if (j->work) napi_delete_async_work(env, j->work);
  free(j->spare);
  free(j->create);
  free(j->dest);
  free(j->next_spare);
  free(j);
}

static int write_all(int fd, const unsigned char *p, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = pwrite(fd, p + off, len - off, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    off += (size_t)n;
  }
  return 0;
}

/*
 * A pool thread that runs a commit job switches itself, once, to SCHED_BATCH: same CPU share, but its wake-ups (each
 * fdatasync and fsync ends with one) no longer preempt the thread that runs the SMTP event loop on its CPU. With
 * smtp-source at 8 sessions the loop was preempted ~2.7 times per message, ~1.8 with it, and ~9 % more messages per
 * second (medians of 6 alternating runs, docs/design.md). Unprivileged; if refused, nothing else changes.
 */
static __thread int thread_batched;
static void batch_this_thread(void) {
  if (thread_batched) return;
  thread_batched = 1;
  struct sched_param sp = {0};
  sched_setscheduler(0, SCHED_BATCH, &sp);
}

/* On the thread pool: no N-API calls here. */
static void job_execute(napi_env env, void *data) {
  (void)env;
  batch_this_thread();
  job_t *j = data;
  const char *path = NULL;
  int fd = -1;
  if (j->spare) {
    fd = open(j->spare, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      path = j->spare;
      j->used_spare = 1;
    }
  }
  if (fd < 0) {
    /* No spare, or it was gone: create the file; this reports the real error if there is one. */
    fd = open(j->create, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      j->err = errno;
      j->syscall = "open";
      return;
    }
    path = j->create;
  }
  /* The next commit's spare, made here rather than by a job of its own (each trip to the thread pool costs the event
   * loop a thread wake-up); before the fdatasync, so that its inode and directory entry go to disk with this commit's
   * journal transaction. Failing to make it fails nothing: that commit creates its file. */
  if (j->next_spare) {
    int sfd = open(j->next_spare, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (sfd >= 0) {
      j->made_spare = close(sfd) == 0;
      if (!j->made_spare) unlink(j->next_spare);
    }
  }
  if (write_all(fd, j->data, j->len) != 0) {
    j->err = errno;
    j->syscall = "write";
  } else if (fdatasync(fd) != 0) {
    j->err = errno;
    j->syscall = "fdatasync";
  }
  /* close() after a successful fdatasync cannot lose data; its error still fails the commit, as in JavaScript. */
  if (close(fd) != 0 && !j->err) {
    j->err = errno;
    j->syscall = "close";
  }
  if (!j->err && rename(path, j->dest) != 0) {
    j->err = errno;
    j->syscall = "rename";
  }
  /* Failed before the rename: nothing of this message is left behind (the spare is used up too). */
  if (j->err) {
    unlink(path);
    return;
  }
  if (j->sync_dir) {
    char *slash = strrchr(j->dest, '/');
    if (slash) {
      *slash = 0;
      int e = group_fsync_dir(slash == j->dest ? "/" : j->dest, &j->did_sync);
      *slash = '/';
      if (e) {
        /* Renamed but not known to be durable: not acknowledged, so taken back out (best effort). */
        j->err = e;
        j->syscall = "fsync";
        unlink(j->dest);
      }
    }
  }
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value result;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->syscall = "commit";
  }
  if (!j->err) {
    napi_create_int32(env, (j->used_spare ? 1 : 0) | (j->made_spare ? 2 : 0) | (j->did_sync ? 4 : 0), &result);
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    /* An Error shaped like node:fs's: code (ENOSPC, EIO...), errno (negative, as libuv reports it), syscall. */
    char name[32], msg[256];
    const char *code = NULL;
    switch (j->err) {
#define C(e) \
  case e: \
    code = #e; \
    break;
      C(ENOENT) C(EACCES) C(EPERM) C(EEXIST) C(ENOSPC) C(EDQUOT) C(EFBIG) C(EIO) C(EROFS) C(EMFILE) C(ENFILE) C(EISDIR) C(ENOTDIR) C(EXDEV) C(EINVAL) C(ENOMEM) C(ECANCELED)
#undef C
      default:
        snprintf(name, sizeof name, "E%d", j->err);
        code = name;
    }
    snprintf(msg, sizeof msg, "%s: %s, %s", code, strerror(j->err), j->syscall);
    napi_value e, v;
    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &v);
    napi_value m;
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, v, m, &e);
    napi_set_named_property(env, e, "code", v);
    napi_create_int32(env, -j->err, &v);
    napi_set_named_property(env, e, "errno", v);
    napi_create_string_utf8(env, j->syscall, NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, e, "syscall", v);
    /* The spare made for a later commit is still good: say so, so that it is used (or removed) rather than left. */
    napi_get_boolean(env, j->made_spare, &v);
    napi_set_named_property(env, e, "madeSpare", v);
    napi_reject_deferred(env, j->deferred, e);
  }
  job_free(env, j);
}

static char *dup_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  napi_get_value_string_utf8(env, v, s, len + 1, &len);
  if (strlen(s) != len) { /* a NUL inside the path: refuse rather than write elsewhere */
    free(s);
    return NULL;
  }
  return s;
}

/*
 * writeFile(spare: string | null, create: string, dest: string, data: Buffer, nextSpare?: string | null, syncDir?: boolean)
 *   -> Promise<number>
 * Resolves once the file is renamed to dest (data synced; with syncDir, dest's directory too) with flags: 1 the spare
 * was used, 2 nextSpare was created (an empty file, 0600), 4 this job ran the directory fsync (not one shared with other
 * jobs). Rejects with an fs-like error, whose madeSpare says whether nextSpare was created; a failed directory fsync
 * (syscall "fsync") has removed dest again.
 */
static napi_value js_write_file(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6], promise, name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype t0 = napi_undefined, t4 = napi_undefined;
  bool is_buffer = false;
  if (argc >= 4) {
    napi_typeof(env, argv[0], &t0);
    napi_is_buffer(env, argv[3], &is_buffer);
  }
  napi_valuetype t5 = napi_undefined;
  if (argc >= 5) napi_typeof(env, argv[4], &t4);
  if (argc >= 6) napi_typeof(env, argv[5], &t5);
  if (argc < 4 || !is_buffer || (t0 != napi_string && t0 != napi_null) || (t4 != napi_string && t4 != napi_null && t4 != napi_undefined) ||
      (t5 != napi_boolean && t5 != napi_undefined)) {
    napi_throw_type_error(env, NULL, "writeFile(spare: string | null, create: string, dest: string, data: Buffer, nextSpare?: string | null, syncDir?: boolean)");
    return NULL;
  }
  job_t *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  j->spare = t0 == napi_string ? dup_string(env, argv[0]) : NULL;
  j->create = dup_string(env, argv[1]);
  j->dest = dup_string(env, argv[2]);
  void *data;
  napi_get_buffer_info(env, argv[3], &data, &j->len);
  j->data = data;
  j->next_spare = t4 == napi_string ? dup_string(env, argv[4]) : NULL;
  if (t5 == napi_boolean) {
    bool b = false;
    napi_get_value_bool(env, argv[5], &b);
    j->sync_dir = b;
  }
  if ((t0 == napi_string && !j->spare) || !j->create || !j->dest || (t4 == napi_string && !j->next_spare)) {
    job_free(env, j);
    napi_throw_type_error(env, NULL, "writeFile: paths must be strings without NUL bytes");
    return NULL;
  }
  /* The buffer stays alive (and unmoved: Buffers are off-heap) until the job completes. */
  napi_create_reference(env, argv[3], 1, &j->data_ref);
  napi_create_promise(env, &j->deferred, &promise);
  napi_create_string_utf8(env, "facteur:spool-commit", NAPI_AUTO_LENGTH, &name);
  if (napi_create_async_work(env, NULL, name, job_execute, job_complete, j, &j->work) != napi_ok || napi_queue_async_work(env, j->work) != napi_ok) {
    napi_value e, m;
    napi_create_string_utf8(env, "cannot queue the commit on the thread pool", NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &e);
    napi_reject_deferred(env, j->deferred, e);
    job_free(env, j);
  }
  return promise;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  napi_create_function(env, "writeFile", NAPI_AUTO_LENGTH, js_write_file, NULL, &fn);
  napi_set_named_property(env, exports, "writeFile", fn);
  return exports;
}

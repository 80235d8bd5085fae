// The file half of a queue commit, as one job on libuv's thread pool: open the empty spare file (or create the file
// when there is no spare), write the whole queue file, fdatasync, close, rename into active/; and create the empty
// spare file a later commit will take (in the same trip to the pool instead of two more, open and close). Why in C: from
// JavaScript these are four calls on the event loop (open, write, close and rename only touch the page cache, but they
// cost ~80 µs of the loop per message, the rename the most) plus a trip to the pool for the fdatasync; here the loop
// makes one call and gets one callback. The directory fsync that makes the rename durable stays in JavaScript, where
// concurrent commits share it (group commit). Same steps and order as the JavaScript path in src/queue/spool.ts, which
// is used when this addon is not built; test/unit/queue/spool.test.ts runs its tests with both.
// Trusts its caller (src/queue/spool.ts): paths are inside the spool, the buffer is the complete queue file.
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
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
} job_t;

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

/* On the thread pool: no N-API calls here. */
static void job_execute(napi_env env, void *data) {
  (void)env;
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
  if (j->err) unlink(path);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *j = data;
  napi_value result;
  if (status != napi_ok && !j->err) {
    j->err = ECANCELED;
    j->syscall = "commit";
  }
  if (!j->err) {
    napi_create_int32(env, (j->used_spare ? 1 : 0) | (j->made_spare ? 2 : 0), &result);
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
 * writeFile(spare: string | null, create: string, dest: string, data: Buffer, nextSpare?: string | null) -> Promise<number>
 * Resolves once the file is renamed to dest (data synced) with flags: 1 the spare was used, 2 nextSpare was created (an
 * empty file, 0600). Rejects with an fs-like error, whose madeSpare says whether nextSpare was created.
 */
static napi_value js_write_file(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], promise, name;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_valuetype t0 = napi_undefined, t4 = napi_undefined;
  bool is_buffer = false;
  if (argc >= 4) {
    napi_typeof(env, argv[0], &t0);
    napi_is_buffer(env, argv[3], &is_buffer);
  }
  if (argc == 5) napi_typeof(env, argv[4], &t4);
  if (argc < 4 || !is_buffer || (t0 != napi_string && t0 != napi_null) || (t4 != napi_string && t4 != napi_null && t4 != napi_undefined)) {
    napi_throw_type_error(env, NULL, "writeFile(spare: string | null, create: string, dest: string, data: Buffer, nextSpare?: string | null)");
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

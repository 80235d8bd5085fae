// The saslauthd socket layer of facteur authd in C, on Node's own libuv loop: accept, read one request, hand its fields
// to JavaScript in one call, write the reply, close. Node's net.Socket costs ~50 µs of CPU per connection, more than a
// whole cached authentication in Cyrus saslauthd; here a connection costs one call into JavaScript.
//
// Trusts nothing from the socket: a request is at most 5 counted strings of at most 256 bytes (upstream's MAX_REQ_LEN);
// a longer length prefix gets "NO " at once; bytes after the request are read and discarded. Fields are passed as
// strings the way src/auth/protocol/frame.ts decodes them (cut at the first NUL, null unless valid UTF-8); the framing
// rules are those of parseRequest() there. Trusts its JavaScript caller (src/auth/daemon/listener.ts), which decides
// every answer. Both layers run the same tests, and a differential fuzz test checks they answer alike.
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FIELD_LEN 256
#define BASE_FIELDS 4
#define MAX_FIELDS 5
#define REQ_CAP (MAX_FIELDS * (2 + MAX_FIELD_LEN))
#define SLOT_BITS 20
#define MAX_SLOTS (1u << SLOT_BITS)

enum state { READING, WORKING, DRAINING, CLOSING };
enum parsed { NEED, OVERSIZE, REQUEST };

typedef struct server server_t;

typedef struct conn {
  uv_pipe_t pipe;
  uv_timer_t timer;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  server_t *srv;
  uint32_t slot;
  enum state state;
  int open_handles;
  int timer_started;
  int reading;
  int eof;
  int grace_started;
  uint64_t read_deadline;
  uint64_t grace_deadline;
  size_t len;
  char *reply;
  char reply_inline[128];
  unsigned char buf[REQ_CAP];
} conn_t;

struct server {
  uv_pipe_t pipe;
  napi_env env;
  napi_ref on_request;
  napi_ref on_closed;
  napi_ref resource;
  napi_async_context actx;
  uint64_t read_timeout_ms;
  uint64_t grace_ms;
  uint64_t drain_ms;
  int listening;
  int closed;
  int released;
  /* Connections by slot; a token given to JavaScript is gen * 2^20 + slot, so a stale token never finds a newer conn. */
  conn_t **slots;
  uint32_t *gens;
  uint32_t *free_slots;
  uint32_t nfree;
  uint32_t cap;
  uint32_t used;
  double accepted;
  uint32_t active;
};

static const char NO_OVERSIZE[] = {0, 3, 'N', 'O', ' '};
static char discard[65536];

/* Same rules as parseRequest(): four fields make a request when nothing follows them; when bytes follow, they must form
 * the optional fifth field. With four_only, the first four fields are the request whatever follows. */
static enum parsed parse(const unsigned char *b, size_t len, int four_only, size_t *req_len, int *fields_out) {
  size_t off = 0;
  int fields = 0;
  while (fields < MAX_FIELDS) {
    if (fields == BASE_FIELDS && (four_only || off == len)) {
      *req_len = off;
      return REQUEST;
    }
    if (len - off < 2) {
      *fields_out = fields;
      return NEED;
    }
    size_t l = ((size_t)b[off] << 8) | b[off + 1];
    if (l > MAX_FIELD_LEN) return OVERSIZE;
    if (len - off - 2 < l) {
      *fields_out = fields;
      return NEED;
    }
    off += 2 + l;
    fields++;
  }
  *req_len = off;
  return REQUEST;
}

static void server_maybe_free(server_t *s);

/* An exception thrown by a JavaScript callback called from the loop: reported as uncaught, as Node does for its own. */
static void raise_pending(napi_env env) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) return;
  napi_value exc;
  napi_get_and_clear_last_exception(env, &exc);
  napi_fatal_exception(env, exc);
}

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->open_handles > 0) return;
  server_t *s = c->srv;
  if (c->reply && c->reply != c->reply_inline) free(c->reply);
  free(c);
  s->active--;
  server_maybe_free(s);
}

static void conn_close(conn_t *c) {
  if (c->state == CLOSING) return;
  c->state = CLOSING;
  server_t *s = c->srv;
  // The slot is released at once: a reply to this connection's token from now on is refused.
  s->slots[c->slot] = NULL;
  s->gens[c->slot]++;
  s->free_slots[s->nfree++] = c->slot;
  uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
  if (c->timer_started) uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void arm_timer(conn_t *c);
static int start_reading(conn_t *c);
static void stop_reading(conn_t *c);

/* Whether bytes are what a WHATWG UTF-8 decoder in fatal mode (TextDecoder { fatal: true }) accepts: no overlong forms,
 * no surrogates, nothing above U+10FFFF, no truncated sequence. */
static int utf8_valid(const unsigned char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned b = p[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return 0;
    }
    if (n - i - 1 < need) return 0;
    if (p[i + 1] < lo || p[i + 1] > hi) return 0;
    for (size_t k = 2; k <= need; k++)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return 0;
    i += need + 1;
  }
  return 1;
}

/* A field as upstream uses it, a C string (an embedded NUL ends it), as a JavaScript string; null when not UTF-8. */
static napi_status field_value(napi_env env, const unsigned char *p, size_t n, napi_value *out) {
  const unsigned char *nul = memchr(p, 0, n);
  if (nul) n = (size_t)(nul - p);
  if (!utf8_valid(p, n)) return napi_get_null(env, out);
  return napi_create_string_utf8(env, (const char *)p, n, out);
}

/* Hand one complete request (the first req_len bytes: 4 or 5 fields) to JavaScript:
 * onRequest(token, login, password, service, realm, clientAddr | undefined, accepted). */
static void dispatch(conn_t *c, size_t req_len) {
  server_t *s = c->srv;
  napi_env env = s->env;
  c->state = WORKING;
  // Work is not bounded by the read deadline (the backend has its own); the drain deadline starts with the reply.
  // Nothing is read meanwhile: a client that leaves is found when the reply is written, bytes it sends are drained after.
  if (c->timer_started) uv_timer_stop(&c->timer);
  stop_reading(c);
  double token = (double)s->gens[c->slot] * (double)MAX_SLOTS + (double)c->slot;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    conn_close(c);
    return;
  }
  napi_value cb, recv, argv[7], result;
  int okay = napi_get_reference_value(env, s->on_request, &cb) == napi_ok && napi_get_reference_value(env, s->resource, &recv) == napi_ok &&
             napi_create_double(env, token, &argv[0]) == napi_ok && napi_get_undefined(env, &argv[5]) == napi_ok &&
             napi_create_double(env, s->accepted, &argv[6]) == napi_ok;
  size_t off = 0;
  for (int f = 0; okay && f < MAX_FIELDS && off < req_len; f++) {
    size_t l = ((size_t)c->buf[off] << 8) | c->buf[off + 1];
    okay = field_value(env, c->buf + off + 2, l, &argv[1 + f]) == napi_ok;
    off += 2 + l;
  }
  if (!okay) {
    napi_close_handle_scope(env, scope);
    conn_close(c);
    return;
  }
  // c may be replied to (state DRAINING) but is never freed during the call: closing is asynchronous.
  napi_status st = napi_make_callback(env, s->actx, recv, cb, 7, argv, &result);
  if (st != napi_ok) {
    raise_pending(env);
    // Nobody will answer this request: close rather than keep the connection forever.
    if (c->state == WORKING) conn_close(c);
  }
  napi_close_handle_scope(env, scope);
}

static void on_written(uv_write_t *req, int status) {
  conn_t *c = req->data;
  if (c->state == CLOSING) return;
  if (status < 0 || c->eof) conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  if (c->state == CLOSING) return;
  if (status < 0) conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);

static int start_reading(conn_t *c) {
  if (c->reading) return 0;
  c->reading = 1;
  return uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static void stop_reading(conn_t *c) {
  if (!c->reading) return;
  c->reading = 0;
  uv_read_stop((uv_stream_t *)&c->pipe);
}

/* Read and discard until the client closes, or the drain deadline. */
static void drain(conn_t *c) {
  arm_timer(c);
  if (start_reading(c) < 0) conn_close(c);
}

/* Upstream's ending: reply, shutdown(SHUT_WR), read and discard until the client closes, close. When the reply goes out in
 * one write and nothing more from the client is waiting, the connection is closed at once: the client still reads the
 * reply, then end of file, exactly as after a drain (on a UNIX socket, what was written stays readable after a close;
 * only unread bytes on our side would reset the client, and there are none). Otherwise: the full sequence. */
static void send_reply(conn_t *c, const char *data, size_t len) {
  c->state = DRAINING;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
  int w = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
  if (w == UV_EAGAIN) w = 0;
  if (w < 0) {
    conn_close(c); // the client is gone
    return;
  }
  if ((size_t)w == len) {
    if (c->eof) {
      conn_close(c);
      return;
    }
    uv_os_fd_t fd;
    int pending = -1;
    if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0 || ioctl(fd, FIONREAD, &pending) != 0 || pending == 0) {
      conn_close(c); // nothing waiting (or the socket is unusable): the close is the half-close and the end
      return;
    }
    shutdown(fd, SHUT_WR);
    drain(c);
    return;
  }
  // The socket took part of the reply (or none): the rest goes through libuv's write queue.
  len -= (size_t)w;
  data += w;
  if (len <= sizeof c->reply_inline) {
    c->reply = c->reply_inline;
  } else {
    c->reply = malloc(len);
    if (!c->reply) {
      conn_close(c);
      return;
    }
  }
  memcpy(c->reply, data, len);
  b = uv_buf_init(c->reply, (unsigned int)len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0) {
    conn_close(c);
    return;
  }
  if (c->eof) return; // the client is gone for reading already: close once the reply is written
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
    conn_close(c);
    return;
  }
  drain(c);
}

static void on_bytes(conn_t *c) {
  size_t req_len = 0;
  int fields = 0;
  enum parsed p = parse(c->buf, c->len, 0, &req_len, &fields);
  if (p == OVERSIZE) {
    c->state = WORKING;
    send_reply(c, NO_OVERSIZE, sizeof NO_OVERSIZE);
  } else if (p == REQUEST) {
    dispatch(c, req_len);
  } else if (fields == BASE_FIELDS && !c->grace_started) {
    // Part of a 5th field: give it a moment, then answer with the 4 we have.
    c->grace_started = 1;
    c->grace_deadline = uv_now(c->pipe.loop) + c->srv->grace_ms;
    arm_timer(c);
  }
}

static void on_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  uint64_t now = uv_now(t->loop);
  if (c->state == READING) {
    if (c->grace_started && now >= c->grace_deadline) {
      size_t req_len = 0;
      int fields = 0;
      if (parse(c->buf, c->len, 1, &req_len, &fields) == REQUEST) {
        dispatch(c, req_len);
        return;
      }
    }
    if (now >= c->read_deadline) {
      conn_close(c);
      return;
    }
    arm_timer(c);
  } else if (c->state == DRAINING) {
    conn_close(c);
  }
}

/* One timer per connection: the read deadline (and the 5th-field grace) while reading, the drain deadline after the reply. */
static void arm_timer(conn_t *c) {
  if (!c->timer_started) {
    uv_timer_init(c->pipe.loop, &c->timer);
    c->timer.data = c;
    c->timer_started = 1;
    c->open_handles++;
  }
  uint64_t now = uv_now(c->pipe.loop);
  uint64_t at;
  if (c->state == READING) {
    at = c->read_deadline;
    if (c->grace_started && c->grace_deadline < at) at = c->grace_deadline;
  } else {
    at = now + c->srv->drain_ms;
  }
  uv_timer_start(&c->timer, on_timer, at > now ? at - now : 0, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  conn_t *c = h->data;
  if (c->state == READING && c->len < REQ_CAP) {
    *buf = uv_buf_init((char *)c->buf + c->len, (unsigned int)(REQ_CAP - c->len));
  } else {
    *buf = uv_buf_init(discard, sizeof discard);
  }
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = stream->data;
  if (n == 0 || c->state == CLOSING) return;
  if (n < 0) {
    if (n != UV_EOF) {
      conn_close(c);
      return;
    }
    c->eof = 1;
    if (c->state == READING) {
      // EOF: a complete 4-field request followed by a half-close is answered; anything shorter gets no reply (upstream).
      size_t req_len = 0;
      int fields = 0;
      if (parse(c->buf, c->len, 1, &req_len, &fields) == REQUEST) dispatch(c, req_len);
      else conn_close(c);
    } else {
      conn_close(c); // draining: the client closed (nothing is read while working)
    }
    return;
  }
  if (c->state != READING || buf->base == discard) return; // after the request: read and discarded
  c->len += (size_t)n;
  on_bytes(c);
}

static int slot_take(server_t *s, uint32_t *slot) {
  if (s->nfree == 0) {
    if (s->used == s->cap) {
      if (s->cap == MAX_SLOTS) return -1;
      uint32_t cap = s->cap ? s->cap * 2 : 256;
      conn_t **slots = realloc(s->slots, cap * sizeof *slots);
      if (!slots) return -1;
      s->slots = slots;
      uint32_t *gens = realloc(s->gens, cap * sizeof *gens);
      if (!gens) return -1;
      s->gens = gens;
      uint32_t *fr = realloc(s->free_slots, cap * sizeof *fr);
      if (!fr) return -1;
      s->free_slots = fr;
      memset(s->gens + s->cap, 0, (cap - s->cap) * sizeof *gens);
      s->cap = cap;
    }
    *slot = s->used++;
  } else {
    *slot = s->free_slots[--s->nfree];
  }
  return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
  server_t *s = listener->data;
  if (status < 0 || s->closed) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->srv = s;
  if (uv_pipe_init(listener->loop, &c->pipe, 0) < 0) {
    free(c);
    return;
  }
  c->pipe.data = c;
  c->open_handles = 1;
  s->active++;
  if (uv_accept(listener, (uv_stream_t *)&c->pipe) < 0 || slot_take(s, &c->slot) < 0) {
    c->state = CLOSING;
    uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
    return;
  }
  s->slots[c->slot] = c;
  s->accepted++;
  c->read_deadline = uv_now(listener->loop) + s->read_timeout_ms;
  // The client usually wrote its request right after connecting: read it now, without waiting for the loop's next poll.
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0) {
    ssize_t n;
    do n = read(fd, c->buf, REQ_CAP);
    while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
      conn_close(c); // closed before a whole request: no reply (upstream)
      return;
    }
    if (n > 0) {
      c->len = (size_t)n;
      on_bytes(c);
      if (c->state != READING) return;
    }
  }
  arm_timer(c);
  if (start_reading(c) < 0) conn_close(c);
}

/* Closed, and every connection gone: drop the references that keep the JavaScript object alive. The struct itself is
 * freed by the object's finalizer, so a late reply() on it stays safe. */
static void server_release(server_t *s) {
  napi_env env = s->env;
  s->released = 1;
  free(s->slots);
  free(s->gens);
  free(s->free_slots);
  s->slots = NULL;
  s->gens = NULL;
  s->free_slots = NULL;
  s->used = s->cap = s->nfree = 0;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, result;
  if (s->on_closed && napi_get_reference_value(env, s->on_closed, &cb) == napi_ok && napi_get_reference_value(env, s->resource, &recv) == napi_ok) {
    if (napi_make_callback(env, s->actx, recv, cb, 0, NULL, &result) != napi_ok) raise_pending(env);
  }
  napi_async_destroy(env, s->actx);
  napi_delete_reference(env, s->on_request);
  if (s->on_closed) napi_delete_reference(env, s->on_closed);
  napi_delete_reference(env, s->resource);
  napi_close_handle_scope(env, scope);
}

static void server_maybe_free(server_t *s) {
  if (s->closed && !s->listening && s->active == 0 && !s->released) server_release(s);
}

static void server_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  server_t *s = data;
  // Only after release (a server never closed lives until the process exits).
  if (s->released) free(s);
}

static void free_unlistened(uv_handle_t *h) {
  free(h->data);
}

static void on_listener_closed(uv_handle_t *h) {
  server_t *s = h->data;
  s->listening = 0;
  server_maybe_free(s);
}

/* ---- JavaScript API ---- */

static napi_value throw_uv(napi_env env, const char *what, int err) {
  char msg[4200];
  snprintf(msg, sizeof msg, "%.4096s: %s", what, uv_strerror(err));
  napi_throw_error(env, uv_err_name(err), msg);
  return NULL;
}

/* listen(path, backlog, onRequest(token, login, password, service, realm, clientAddr, accepted), readTimeoutMs, graceMs, drainMs) -> server
 * onRequest is called with `this` = the returned server object. */
static napi_value js_listen(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 6) {
    napi_throw_type_error(env, NULL, "listen(path, backlog, onRequest, readTimeoutMs, graceMs, drainMs)");
    return NULL;
  }
  char path[4096];
  size_t plen = 0;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &plen) != napi_ok || plen >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "path: a string shorter than 4 KiB");
    return NULL;
  }
  int32_t backlog;
  int64_t read_ms, grace_ms, drain_ms;
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (napi_get_value_int32(env, argv[1], &backlog) != napi_ok || t != napi_function ||
      napi_get_value_int64(env, argv[3], &read_ms) != napi_ok || napi_get_value_int64(env, argv[4], &grace_ms) != napi_ok ||
      napi_get_value_int64(env, argv[5], &drain_ms) != napi_ok || read_ms < 0 || grace_ms < 0 || drain_ms < 0) {
    napi_throw_type_error(env, NULL, "listen(path: string, backlog: int, onRequest: function, readTimeoutMs, graceMs, drainMs: ms >= 0)");
    return NULL;
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) {
    napi_throw_error(env, NULL, "no event loop");
    return NULL;
  }
  server_t *s = calloc(1, sizeof *s);
  if (!s) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  s->env = env;
  s->read_timeout_ms = (uint64_t)read_ms;
  s->grace_ms = (uint64_t)grace_ms;
  s->drain_ms = (uint64_t)drain_ms;
  int err = uv_pipe_init(loop, &s->pipe, 0);
  if (err < 0) {
    free(s);
    return throw_uv(env, "uv_pipe_init", err);
  }
  s->pipe.data = s;
  s->listening = 1;
  err = uv_pipe_bind(&s->pipe, path);
  if (err == 0) err = uv_listen((uv_stream_t *)&s->pipe, backlog, on_connection);
  if (err < 0) {
    // Not yet known to JavaScript: the handle is closed and the server freed without references to drop.
    uv_close((uv_handle_t *)&s->pipe, free_unlistened);
    return throw_uv(env, path, err);
  }
  napi_value obj, name;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, "facteur:saslauthd-socket", NAPI_AUTO_LENGTH, &name);
  napi_wrap(env, obj, s, server_finalize, NULL, NULL);
  napi_create_reference(env, obj, 1, &s->resource);
  napi_create_reference(env, argv[2], 1, &s->on_request);
  napi_async_init(env, obj, name, &s->actx);
  return obj;
}

/* The n arguments of a call whose first is a listening server (from listen()): the server, or NULL with an exception. */
static server_t *server_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  void *p = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != n || napi_unwrap(env, argv[0], &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "expected a listening saslauthd socket and its arguments");
    return NULL;
  }
  return p;
}

/* reply(server, token, bytes) -> true if sent; false when the connection is gone (closed, timed out, or already answered). */
static napi_value js_reply(napi_env env, napi_callback_info info) {
  napi_value argv[3], out;
  server_t *s = server_args(env, info, 3, argv);
  if (!s) return NULL;
  double token;
  void *data;
  size_t len;
  if (napi_get_value_double(env, argv[1], &token) != napi_ok || napi_get_buffer_info(env, argv[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "reply(server, token: number, reply: Buffer)");
    return NULL;
  }
  int sent = 0;
  if (token >= 0 && token < 9007199254740992.0) {
    uint64_t tk = (uint64_t)token;
    uint32_t slot = (uint32_t)(tk & (MAX_SLOTS - 1));
    uint64_t gen = tk >> SLOT_BITS;
    if (slot < s->used && s->gens[slot] == gen && s->slots[slot] && s->slots[slot]->state == WORKING) {
      send_reply(s->slots[slot], data, len);
      sent = 1;
    }
  }
  napi_get_boolean(env, sent, &out);
  return out;
}

/* close(server, onClosed): stop accepting; connections already accepted are still answered; onClosed() once they are
 * all gone. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[2], undef;
  server_t *s = server_args(env, info, 2, argv);
  if (!s) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[1], &t);
  if (t != napi_function) {
    napi_throw_type_error(env, NULL, "close(server, onClosed: function)");
    return NULL;
  }
  if (!s->closed) {
    napi_create_reference(env, argv[1], 1, &s->on_closed);
    s->closed = 1;
    uv_close((uv_handle_t *)&s->pipe, on_listener_closed);
  }
  napi_get_undefined(env, &undef);
  return undef;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"listen", NULL, js_listen, NULL, NULL, NULL, napi_default, NULL},
      {"reply", NULL, js_reply, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

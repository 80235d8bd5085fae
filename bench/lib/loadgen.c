// The benchmark's load generator in C (bench/lib/cgen.ts builds and runs it): CONCURRENCY clients in a closed loop on
// one epoll loop, one saslauthd request per connection, as Postfix's libsasl sends them. Same rules as runLoad() in
// loadgen.ts: latency from the start of a request (connect queueing included) to its complete reply; only a reply
// that is exactly a counted string starting "OK" is a success; anything else is an error, by kind.
//
// Written in C so that the generator's own cost stays out of what is measured: the Node generator used ~100 µs of CPU
// per request and paused for its own garbage collections, which both daemons' latencies then carried.
//
// Trusts its caller (cgen.ts) for the arguments and the request payloads; trusts nothing from the daemon.
//
// Usage: loadgen SOCKET CONCURRENCY DURATION_MS TIMEOUT_MS FIRST_USER [RATE] < payloads
//   RATE (requests per second, all clients together; 0 or absent: closed loop): each client starts a request every
//   CONCURRENCY/RATE seconds, on a fixed schedule, and a request's latency counts from its scheduled start, so that a
//   daemon that falls behind shows it in its latencies instead of being offered less (no coordinated omission).
//   stdin:  u32 count, then count x (u32 length, bytes): the encoded requests, taken in turn (big-endian lengths)
//   stdout: one JSON line (counts, errors by kind, CPU), then `ok` little-endian doubles: the latencies in ms
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLY 1023
#define GATE_RETRY_MS 5
#define MAX_KINDS 64

enum phase { IDLE, QUEUED, CONNECTING, WRITING, READING };

typedef struct {
  int fd;
  enum phase phase;
  double started;   /* ms, start of the current request (before any queueing; its scheduled time with a RATE) */
  double slot;      /* ms, with a RATE: when this client's next request is due */
  double deadline;  /* ms, started + timeout */
  const unsigned char *req;
  uint32_t req_len;
  uint32_t sent;
  uint32_t got;
  unsigned char buf[MAX_REPLY + 3];
} client_t;

static struct { char key[160]; long n; } kinds[MAX_KINDS];
static int nkinds;
static long error_count, ok_count, retries;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void count_error(const char *key) {
  error_count++;
  for (int i = 0; i < nkinds; i++)
    if (strcmp(kinds[i].key, key) == 0) { kinds[i].n++; return; }
  if (nkinds == MAX_KINDS) key = "other";
  for (int i = 0; i < nkinds; i++)
    if (strcmp(kinds[i].key, key) == 0) { kinds[i].n++; return; }
  snprintf(kinds[nkinds].key, sizeof kinds[nkinds].key, "%s", key);
  kinds[nkinds++].n = 1;
}

static void json_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f) fprintf(out, "\\u%04x", *p);
    else fputc(*p, out);
  }
  fputc('"', out);
}

/* "reply: " + the first 40 characters of the reply text; bytes that are not printable ASCII become '?'. */
static void count_reply_error(const unsigned char *text, size_t len) {
  char key[64] = "reply: ";
  size_t k = strlen(key);
  for (size_t i = 0; i < len && i < 40; i++) key[k++] = (text[i] >= 0x20 && text[i] < 0x7f) ? (char)text[i] : '?';
  key[k] = 0;
  count_error(key);
}

static void count_transport_error(const char *what) {
  char key[96];
  snprintf(key, sizeof key, "transport: %s", what);
  count_error(key);
}

static const char *errno_name(int e) {
  const char *n = strerrorname_np(e);
  return n ? n : "socket error";
}

/* Latencies of successes, grown as needed. */
static double *lat;
static size_t lat_cap;

static void record(double ms) {
  if ((size_t)ok_count == lat_cap) {
    lat_cap = lat_cap ? lat_cap * 2 : 1 << 16;
    lat = realloc(lat, lat_cap * sizeof *lat);
    if (!lat) { perror("realloc"); exit(2); }
  }
  lat[ok_count++] = ms;
}

/* The connect gate (ConnectGate in loadgen.ts): a UNIX socket with a full listen queue refuses a non-blocking connect
 * with EAGAIN, where a C client's blocking connect() would wait; refused clients wait in FIFO order and one is let
 * through per completed request, or every GATE_RETRY_MS when nothing completes. */
static int *gate;
static int gate_head, gate_len, gate_cap;
static double gate_timer; /* 0 when not armed */

static void gate_push_back(int i) { gate[(gate_head + gate_len++) % gate_cap] = i; }
static void gate_push_front(int i) { gate_head = (gate_head + gate_cap - 1) % gate_cap; gate[gate_head] = i; gate_len++; }
static int gate_pop(void) {
  if (!gate_len) return -1;
  int i = gate[gate_head];
  gate_head = (gate_head + 1) % gate_cap;
  gate_len--;
  return i;
}
static void gate_arm(void) { if (!gate_timer) gate_timer = now_ms() + GATE_RETRY_MS; }

static client_t *clients;
static int nclients, epfd;
static const char *sock_path;
static double timeout_ms, end_at;
static double interval_ms; /* with a RATE: time between two requests of one client; 0: closed loop */
static unsigned char **payloads;
static uint32_t *payload_len, npayloads, next_payload;

static void attempt(int i);

static void finish(int i) {
  client_t *c = &clients[i];
  if (c->fd >= 0) {
    close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
  }
  c->phase = IDLE;
  int w = gate_pop();
  if (w >= 0) attempt(w);
}

static void watch(client_t *c, int i, uint32_t events, int op) {
  struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
  if (epoll_ctl(epfd, op, c->fd, &ev) < 0) { perror("epoll_ctl"); exit(2); }
}

static void on_writable(int i);

static void attempt(int i) {
  client_t *c = &clients[i];
  c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) { perror("socket"); exit(2); }
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", sock_path);
  c->sent = c->got = 0;
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) == 0) {
    c->phase = WRITING;
    watch(c, i, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD);
    on_writable(i);
    return;
  }
  int e = errno;
  if (e == EINPROGRESS) {
    c->phase = CONNECTING;
    watch(c, i, EPOLLOUT, EPOLL_CTL_ADD);
    return;
  }
  if (e == EAGAIN && now_ms() - c->started < timeout_ms) {
    close(c->fd);
    c->fd = -1;
    c->phase = QUEUED;
    retries++;
    gate_push_front(i);
    gate_arm();
    return;
  }
  count_transport_error(errno_name(e));
  finish(i);
}

static void start(int i) {
  client_t *c = &clients[i];
  c->req = payloads[next_payload % npayloads];
  c->req_len = payload_len[next_payload % npayloads];
  next_payload++;
  c->started = now_ms();
  if (interval_ms > 0) {
    c->started = c->slot; /* due then, even if started later */
    c->slot += interval_ms;
  }
  c->deadline = c->started + timeout_ms;
  if (gate_len) {
    c->phase = QUEUED;
    gate_push_back(i);
    gate_arm();
  } else {
    attempt(i);
  }
}

static void on_writable(int i) {
  client_t *c = &clients[i];
  while (c->sent < c->req_len) {
    ssize_t n = send(c->fd, c->req + c->sent, c->req_len - c->sent, MSG_NOSIGNAL);
    if (n > 0) { c->sent += (uint32_t)n; continue; }
    if (n < 0 && errno == EAGAIN) return;
    /* The daemon may answer and close before reading all we send (e.g. a refusal): read what it said first. */
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) break;
    count_transport_error(errno_name(errno));
    finish(i);
    return;
  }
  c->phase = READING;
  watch(c, i, EPOLLIN, EPOLL_CTL_MOD);
}

static void on_readable(int i) {
  client_t *c = &clients[i];
  for (;;) {
    ssize_t n = recv(c->fd, c->buf + c->got, sizeof c->buf - c->got, 0);
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) {
      count_transport_error(errno_name(errno));
      finish(i);
      return;
    }
    if (n == 0) {
      count_transport_error(c->got ? "truncated reply" : "closed without reply");
      finish(i);
      return;
    }
    c->got += (uint32_t)n;
    if (c->got >= 2) {
      uint32_t len = ((uint32_t)c->buf[0] << 8) | c->buf[1];
      if (c->got >= 2 + len) {
        const unsigned char *text = c->buf + 2;
        if (len >= 2 && text[0] == 'O' && text[1] == 'K') record(now_ms() - c->started);
        else count_reply_error(text, len);
        finish(i);
        return;
      }
    }
    if (c->got > MAX_REPLY + 2) {
      count_transport_error("oversized reply");
      finish(i);
      return;
    }
  }
}

static int read_all(int fd, void *p, size_t n) {
  unsigned char *b = p;
  while (n) {
    ssize_t r = read(fd, b, n);
    if (r <= 0) return -1;
    b += r;
    n -= (size_t)r;
  }
  return 0;
}

static uint32_t be32(const unsigned char *b) { return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3]; }

static double cpu_ms(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec * 1e3 + u.ru_utime.tv_usec / 1e3 + u.ru_stime.tv_sec * 1e3 + u.ru_stime.tv_usec / 1e3;
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: %s SOCKET CONCURRENCY DURATION_MS TIMEOUT_MS FIRST_USER [RATE] < payloads\n", argv[0]);
    return 2;
  }
  sock_path = argv[1];
  nclients = atoi(argv[2]);
  double duration = atof(argv[3]);
  timeout_ms = atof(argv[4]);
  next_payload = (uint32_t)atol(argv[5]);
  double rate = argc == 7 ? atof(argv[6]) : 0;
  if (rate < 0) { fprintf(stderr, "loadgen: bad rate\n"); return 2; }
  if (rate > 0) interval_ms = 1000.0 * nclients / rate;
  /* Linux lets a timed wait of a normal thread end up to 50 µs late (timer slack): at tens of thousands of requests per
   * second, that lateness would pile up in the schedule and be counted against the daemon. */
  if (prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) != 0) perror("prctl(PR_SET_TIMERSLACK)");
  if (nclients < 1 || duration <= 0 || timeout_ms <= 0 || strlen(sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "loadgen: bad arguments\n");
    return 2;
  }
  unsigned char hdr[4];
  if (read_all(0, hdr, 4) < 0 || (npayloads = be32(hdr)) == 0) { fprintf(stderr, "loadgen: no payloads on stdin\n"); return 2; }
  payloads = calloc(npayloads, sizeof *payloads);
  payload_len = calloc(npayloads, sizeof *payload_len);
  for (uint32_t i = 0; i < npayloads; i++) {
    if (read_all(0, hdr, 4) < 0) { fprintf(stderr, "loadgen: truncated payloads\n"); return 2; }
    payload_len[i] = be32(hdr);
    payloads[i] = malloc(payload_len[i] ? payload_len[i] : 1);
    if (read_all(0, payloads[i], payload_len[i]) < 0) { fprintf(stderr, "loadgen: truncated payloads\n"); return 2; }
  }
  clients = calloc((size_t)nclients, sizeof *clients);
  gate_cap = nclients;
  gate = calloc((size_t)gate_cap, sizeof *gate);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) { perror("epoll_create1"); return 2; }

  double cpu0 = cpu_ms();
  double t0 = now_ms();
  end_at = t0 + duration;
  for (int i = 0; i < nclients; i++) {
    clients[i].fd = -1;
    clients[i].slot = t0 + interval_ms * i / nclients; /* with a RATE, the clients' schedules are spread evenly */
  }
  if (interval_ms == 0)
    for (int i = 0; i < nclients; i++) start(i);

  struct epoll_event evs[256];
  for (;;) {
    double now = now_ms();
    int busy = 0, again = 0;
    double wake = now + 1000;
    for (int i = 0; i < nclients; i++) {
      client_t *c = &clients[i];
      if (c->phase == IDLE) {
        if (interval_ms > 0 && now < end_at && c->slot > now) {
          /* not due yet */
          busy = 1;
          if (c->slot < wake) wake = c->slot;
          continue;
        }
        if (now >= end_at || (interval_ms > 0 && c->slot >= end_at)) continue; /* done */
        start(i);
        now = now_ms();
        if (c->phase == IDLE) { again = 1; continue; } /* failed at once: starts again on the next turn */
      }
      if (now >= c->deadline) {
        if (c->phase == QUEUED) {
          /* Leave the gate's queue. */
          int n = gate_len;
          for (int k = 0; k < n; k++) { int w = gate_pop(); if (w != i) gate_push_back(w); }
          c->phase = IDLE;
          count_transport_error("timeout");
        } else {
          count_transport_error("timeout");
          finish(i);
        }
        i--; /* look at this client again: it may start its next request */
        continue;
      }
      busy = 1;
      if (c->deadline < wake) wake = c->deadline;
    }
    if (again && now < end_at) { busy = 1; wake = now; }
    if (!busy) break;
    if (gate_timer) {
      if (now >= gate_timer) {
        gate_timer = 0;
        int w = gate_pop();
        if (w >= 0) attempt(w);
        if (gate_len) gate_arm();
        continue;
      }
      if (gate_timer < wake) wake = gate_timer;
    }
    /* Sub-millisecond waits: a RATE's schedule may be a fraction of a millisecond apart. */
    double wait_ms = wake <= now ? 0 : wake - now;
    struct timespec ts = {.tv_sec = (time_t)(wait_ms / 1000)};
    ts.tv_nsec = (long)((wait_ms - ts.tv_sec * 1000.0) * 1e6);
    int n = epoll_pwait2(epfd, evs, 256, &ts, NULL);
    if (n < 0 && errno != EINTR) { perror("epoll_wait"); return 2; }
    for (int k = 0; k < n; k++) {
      int i = (int)evs[k].data.u32;
      client_t *c = &clients[i];
      if (c->fd < 0) continue; /* finished by an earlier event of this batch */
      if (c->phase == CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { count_transport_error(errno_name(err)); finish(i); continue; }
        c->phase = WRITING;
        watch(c, i, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
      }
      if (c->phase == WRITING && (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) on_writable(i);
      if (c->fd >= 0 && c->phase == READING && (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) on_readable(i);
    }
  }
  double elapsed = now_ms() - t0;
  double cpu = cpu_ms() - cpu0;

  printf("{\"ok\":%ld,\"errorCount\":%ld,\"connectRetries\":%ld,\"elapsedMs\":%.3f,\"generatorCpuMs\":%.3f,\"errors\":{", ok_count, error_count, retries, elapsed, cpu);
  for (int i = 0; i < nkinds; i++) {
    if (i) putchar(',');
    json_string(stdout, kinds[i].key);
    printf(":%ld", kinds[i].n);
  }
  printf("}}\n");
  fwrite(lat, sizeof *lat, (size_t)ok_count, stdout);
  return fflush(stdout) == 0 ? 0 : 2;
}

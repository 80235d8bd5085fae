{
  "targets": [
    {
      "target_name": "spool_commit",
      "sources": ["commit.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}

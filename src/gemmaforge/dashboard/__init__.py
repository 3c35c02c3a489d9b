"""The live training dashboard: a local page (127.0.0.1 only) that reads run folders and
updates itself over server-sent events while a run trains. See docs/dashboard.md."""

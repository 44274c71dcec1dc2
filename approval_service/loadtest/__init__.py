"""``miaopi loadtest``: an open-loop HTTP load generator for the approval API.

- :mod:`.mix` draws a realistic mix of applications from a generated registry and
  pre-builds every request's bytes before the run;
- :mod:`.client` sends them on a fixed schedule over keep-alive connections and
  records, per request, the latency from its *scheduled* send time;
- :mod:`.report` turns the recording into percentiles (HDR histogram), a JSON
  report and a PNG.
"""

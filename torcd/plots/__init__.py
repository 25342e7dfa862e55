"""Resource plots of a workflow's attempts, as standalone SVG strings and an HTML page: pure
functions with no I/O, shared by `torcctl reports plot-resources`, the daemon (`resource_monitor.
generate_plots`) and the dashboard."""

from torcd.plots.charts import memory_svg, runtime_svg
from torcd.plots.page import index_html, plot_files
from torcd.plots.timeline import timeline_svg

__all__ = ["index_html", "memory_svg", "plot_files", "runtime_svg", "timeline_svg"]

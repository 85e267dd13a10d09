"""One look for every figure."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "resnet": "#1f77b4",
    "neural_ode": "#17becf",
    "momentum": "#d62728",
    "second_order_ode": "#ff7f0e",
    "revnet": "#2ca02c",
    "checkpoint": "#9467bd",
    "reference": "#555555",
}


def new_figure(ncols=1, nrows=1, width=4.2, height=3.4, **kw):
    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110})
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)

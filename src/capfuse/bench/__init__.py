"""Speed measurements behind ``make bench``: embedding throughput and the second level at size."""

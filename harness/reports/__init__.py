"""Reports: statistics over seeds, the verdict, figures, and the rendered Markdown/HTML documents."""

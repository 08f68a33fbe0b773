

observed_at*€ıŠ¾
"""The suite file: loading and validating it, expanding its grid into trials, and its equal-budget study."""

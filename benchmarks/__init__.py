"""Speed and fidelity benchmarks of slimtrain; each ``bench_<name>.py`` exposes ``main(argv)``."""

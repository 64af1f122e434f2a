"""The config tree, shipped as the package snn_lstm.conf (Hydra: pkg://snn_lstm.conf)."""

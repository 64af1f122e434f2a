"""snnlstm: LSTM spiking neural networks (Lotfi Rezaabad & Vishwanath, ICONS 2020)."""

__version__ = "0.1.0"

"""snnlstm: LSTM spiking neural networks (Lotfi Rezaabad & Vishwanath, ICONS 2020).

The layer, for your own models (importing it loads torch and nothing of the app):

    from snn_lstm import SpikingLSTM
    lstm = SpikingLSTM(28, 128, batch_first=True)   # torch.nn.LSTM's signature
    output, (h_n, c_n) = lstm(x)                      # every value 0 or 1
"""

from snn_lstm.spiking import SpikeParams, SpikingLSTM, SpikingLSTMCell, Surrogate, spike_params, spiking_lstm_step

__version__ = "0.1.0"
__all__ = ["SpikeParams", "SpikingLSTM", "SpikingLSTMCell", "Surrogate", "spike_params", "spiking_lstm_step"]

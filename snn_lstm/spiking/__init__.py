"""The science: spike functions with surrogate gradients and the spiking LSTM."""

from snn_lstm.spiking.lstm import SpikeParams, SpikingLSTM, SpikingLSTMCell, spiking_lstm_step
from snn_lstm.spiking.surrogate import DERIVATIVES, Surrogate

__all__ = ["DERIVATIVES", "SpikeParams", "SpikingLSTM", "SpikingLSTMCell", "Surrogate", "spiking_lstm_step"]

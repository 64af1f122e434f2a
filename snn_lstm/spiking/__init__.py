"""The science: spike functions with surrogate gradients and the spiking LSTM (torch only)."""

from snn_lstm.spiking.lstm import (SpikeParams, SpikingLSTM, SpikingLSTMCell, spike_params, spiking_lstm_step,
                                   unpack_spikes)
from snn_lstm.spiking.surrogate import DERIVATIVES, Surrogate

__all__ = ["DERIVATIVES", "SpikeParams", "SpikingLSTM", "SpikingLSTMCell", "Surrogate", "spike_params",
           "spiking_lstm_step", "unpack_spikes"]

"""LoRA variants on the 4-bit base: DoRA, rsLoRA, a LoftQ start and NEFTune each change what they should, and the adapter
they save loads with plain peft on the plain 4-bit base; PiSSA and the other starts peft cannot make on 4-bit weights are
refused before anything is loaded. One short in-process training run with every variant on serves all the checks on it."""
import json
import pytest, torch
from transformers import TrainerCallback
from conftest import first_chats, refused_in_process

VARIANTS = ['lora.use_dora=true', 'lora.use_rslora=true', 'lora.init_lora_weights=loftq', 'training.neftune_noise_alpha=5',
            'lora.lora_dropout=0']   # no dropout: NEFTune is then the only randomness of a training-mode forward
SHORT = ['training.max_steps=1', 'training.gradient_accumulation_steps=1', 'training.per_device_train_batch_size=2', 'data.max_length=64',
         'training.gradient_checkpointing=false', 'data.num_proc=1', 'training.learning_rate=5e-3', 'training.warmup_steps=0',
         'training.save_steps=100', 'training.disable_tqdm=true']
IDS = torch.tensor([list(range(5, 45))])   # a fixed row of token ids

def rel_l2(a, b)->float: return ((a.float() - b.float()).norm() / a.float().norm()).item()

class Probe(TrainerCallback):
    "DoRA's magnitudes at the start; after each step, the loss of one fixed row through the trainer's model (its loss path, its hooks), twice in training mode and twice in eval mode."
    def __init__(self): self.losses, self.magnitudes = [], {}
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.magnitudes = {n.replace('.default.weight', ''): p.detach().clone() for n, p in model.named_parameters() if 'lora_magnitude_vector' in n}
    def on_step_end(self, args, state, control, model=None, **kw):
        was, twice = model.training, lambda: [model(input_ids=IDS, labels=IDS).loss.item() for _ in range(2)]
        with torch.no_grad():
            model.train(); train = twice()
            model.eval(); evaluate = twice()
        model.train(was)
        self.losses.append((train, evaluate))

@pytest.fixture(scope='module')
def variant_run(tmp_path_factory):
    "A 1-step in-process run with DoRA, rsLoRA, a LoftQ start and NEFTune on: `(run, summary, probe)`."
    from qlora_nb.config import load_config
    from qlora_nb.run import resolve_run
    from qlora_nb.train import train
    d = tmp_path_factory.mktemp('variants')
    data = first_chats(d/'chats.jsonl', 16)
    run = resolve_run(load_config(overrides=[f'training_data_json_path={data}', f'result_path={d}/run', f'save_path={d}/adapter',
                                             *SHORT, *VARIANTS]))
    probe = Probe()
    return run, train(run, callbacks=[probe]), probe

def test_refused_before_loading(tmp_path, monkeypatch, capsys):
    "PiSSA (and any start that rewrites or cannot read 4-bit weights) and DoRA on MoE weight tensors: one sentence each, exit 2, nothing written."
    from qlora_nb.config import ConfigError, load_config
    monkeypatch.chdir(tmp_path)
    refused_in_process(capsys, 'train', '--set', 'lora.init_lora_weights=pissa', unwritten=[tmp_path/'outputs'],
                       needles=("'lora.init_lora_weights' is 'pissa', but PiSSA", 'refuses on 4-bit weights', 'use loftq'))
    refused_in_process(capsys, 'train', '--set', 'lora.target_parameters=[mlp.experts.gate_up_proj]', '--set', 'lora.lora_dropout=0',
                       '--set', 'lora.use_dora=true', unwritten=[tmp_path/'outputs'], needles=('without DoRA', 'set lora.use_dora=false'))
    for bad, says in (('lora.init_lora_weights=pissa_niter_4', 'PiSSA'), ('lora.init_lora_weights=olora', 'changed base'),
                      ('lora.init_lora_weights=eva', 'pass over the data'), ('lora.loftq_config={loftq_bits: 4}', 'loftq alone')):
        with pytest.raises(ConfigError, match=says): load_config(overrides=[bad])

def test_loftq_starts_nearer_full_precision():
    "A LoftQ start (here with DoRA, whose magnitudes are then measured of base plus adapters) is nearer the full-precision model than the 4-bit base; peft gets a plain start."
    from bitsandbytes.functional import dequantize_4bit
    from transformers import AutoModelForCausalLM
    from qlora_nb.config import load_config
    from qlora_nb.model import load_model, lora_config
    from qlora_nb.run import resolve_run
    run = resolve_run(load_config(overrides=['lora.init_lora_weights=loftq', 'lora.use_dora=true']), for_training=False)
    assert lora_config(run).init_lora_weights is True   # what adapter_config.json says: plain peft loads it without a LoftQ of its own
    model = load_model(run).eval()
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    w = dequantize_4bit(q.base_layer.weight.data, q.base_layer.weight.quant_state).float() + q.get_delta_weight('default')
    torch.testing.assert_close(q.lora_magnitude_vector['default'].weight, w.norm(dim=1), rtol=1e-2, atol=0)
    full = AutoModelForCausalLM.from_pretrained(run.model_path, dtype=torch.float32)
    with torch.no_grad():
        ref, start = full(input_ids=IDS).logits, model(input_ids=IDS).logits
        with model.disable_adapter(): base = model(input_ids=IDS).logits
    assert rel_l2(ref, start) < 0.9 * rel_l2(ref, base), (rel_l2(ref, start), rel_l2(ref, base))

def test_variant_adapter_files(variant_run):
    "adapter_config.json says DoRA and rsLoRA and a plain start (the LoftQ start is in the weights), the model card all four; the magnitudes are saved and trained."
    from safetensors.torch import load_file
    run, s, probe = variant_run
    adapter = s['save_path']
    ac = json.loads(open(f'{adapter}/adapter_config.json', encoding='utf-8').read())
    assert (ac['use_dora'], ac['use_rslora'], ac['init_lora_weights']) == (True, True, True), ac
    assert "init_lora_weights: loftq" in open(f'{adapter}/qlora_nb_config.yaml', encoding='utf-8').read()
    card = open(f'{adapter}/README.md', encoding='utf-8').read()
    assert ', DoRA, rsLoRA, LoftQ start |' in card and ', NEFTune noise alpha 5 |' in card, card
    saved = load_file(f'{adapter}/adapter_model.safetensors')
    mags = {k: v for k, v in saved.items() if 'lora_magnitude_vector' in k}
    assert len(mags) == len([k for k in saved if 'lora_A' in k]) > 0, sorted(saved)[:4]   # one per adapted layer
    moved = [k for k, v in mags.items() if not torch.equal(v, probe.magnitudes[k])]
    assert len(moved) == len(mags), (len(moved), len(mags))   # one step of training moved every magnitude

def test_variant_adapter_loads_with_plain_peft(variant_run, tmp_path):
    "Plain peft on a plain 4-bit base loads the trained weights and gives qlora_nb's logits (rsLoRA's alpha/√r included); the merge gives them too."
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from peft import PeftModel, get_peft_model_state_dict
    from qlora_nb.infer import load_for_inference, merge_adapter
    run, s, _ = variant_run
    adapter = s['save_path']
    trained, saved = get_peft_model_state_dict(s['trainer'].model), load_file(f'{adapter}/adapter_model.safetensors')
    assert trained.keys() == saved.keys() and all(torch.equal(trained[k].cpu(), saved[k]) for k in saved)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run.model_path, quantization_config=q), adapter)
    lo = run.config['lora']
    assert plain.base_model.model.model.layers[0].self_attn.q_proj.scaling['default'] == lo['lora_alpha'] / lo['r'] ** 0.5
    ours, _ = load_for_inference(adapter)
    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(adapter, tmp_path/'merged', dtype='float32'))
    with torch.no_grad():
        want = ours(input_ids=IDS).logits
        # plain peft in training mode (no dropout here): on a CPU with AVX512-BF16 an eval forward lets bitsandbytes repack the 4-bit
        # weights, which peft's DoRA then dequantizes wrongly (`05_model.keep_4bit_layout`; qlora_nb's loading keeps the layout)
        d = {'plain peft': rel_l2(want, plain.train()(input_ids=IDS).logits), 'merged': rel_l2(want, merged(input_ids=IDS).logits)}
        with ours.disable_adapter(): d['adapter off'] = rel_l2(want, ours(input_ids=IDS).logits)
    assert d['plain peft'] < 1e-5 and d['merged'] < 5e-2 and d['adapter off'] > 0.1, d

def test_neftune_noise_in_training_only(variant_run):
    "NEFTune noises every training-mode forward through the run's own loss path while training, never an eval-mode one, and stops when training ends."
    run, s, probe = variant_run
    assert run.loss_path == 'chunked' and len(probe.losses) == 1   # the chunked loss calls the same embedding layer the Trainer hooks
    for train, evaluate in probe.losses:
        assert train[0] != train[1] and evaluate[0] == evaluate[1], (train, evaluate)
    model = s['trainer'].model.train()
    with torch.no_grad(): after = [model(input_ids=IDS, labels=IDS).loss.item() for _ in range(2)]
    assert after[0] == after[1] and after[0] == pytest.approx(probe.losses[-1][1][0], rel=1e-3), (after, probe.losses[-1])

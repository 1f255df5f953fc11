"""Independent float64 evaluation of a Gemma 3 GGUF file (NumPy).

Reads the GGUF header, dequantises the tensors (ggml layouts: F32, Q8_0,
Q5_0, Q4_K, Q6_K) and runs the Gemma 3 graph (embedding scaled by sqrt(dim),
QK norms, post-attention and post-FFN norms, GeGLU, NeoX RoPE with base 1e4 on
sliding-window layers and 1e6 on every sixth) over the given token pieces,
then prints the five best next tokens. The first-token goldens of
crates/inference/tests/llm_gemma.rs were recorded with it:

    python3 scripts/gemma3_reference.py MODEL.gguf '<bos>|Monday|,|▁Tuesday|,'

Pieces are vocabulary entries separated by `|`. Needs numpy.
"""
import struct, sys, numpy as np
P=sys.argv[1]
b=open(P,'rb').read()
o=0
def rd(fmt):
    global o; v=struct.unpack_from('<'+fmt,b,o); o+=struct.calcsize('<'+fmt); return v[0]
def s():
    n=rd('Q'); global o; v=b[o:o+n].decode('utf8','replace'); o+=n; return v
T={0:'B',1:'b',2:'H',3:'h',4:'I',5:'i',6:'f',7:'?',10:'Q',11:'q',12:'d'}
def val(t):
    if t==8: return s()
    if t==9:
        et=rd('I'); n=rd('Q'); return [val(et) for _ in range(n)]
    return rd(T[t])
o=4; rd('I'); nt=rd('Q'); nkv=rd('Q'); M={}
for _ in range(nkv):
    k=s(); t=rd('I'); M[k]=val(t)
infos={}
for _ in range(nt):
    n=s(); nd=rd('I'); dims=[rd('Q') for _ in range(nd)]; t=rd('I'); off=rd('Q'); infos[n]=(dims,t,off)
base=(o+31)//32*32
buf=np.frombuffer(b,dtype=np.uint8)
def f16(a): return a.view(np.float16).astype(np.float32)
def deq(name):
    dims,t,off=infos[name]; n=int(np.prod(dims)); cols=dims[0]
    if t==0: return np.frombuffer(b,dtype=np.float32,count=n,offset=base+off).reshape(-1,cols) if len(dims)>1 else np.frombuffer(b,dtype=np.float32,count=n,offset=base+off)
    if t==8:
        nb=n//32; a=buf[base+off:base+off+nb*34].reshape(nb,34)
        d=f16(a[:,0:2].copy()).reshape(nb,1); q=a[:,2:].view(np.int8).astype(np.float32)
        return (d*q).reshape(-1,cols)
    if t==6:
        nb=n//32; a=buf[base+off:base+off+nb*22].reshape(nb,22)
        d=f16(a[:,0:2].copy()).reshape(nb,1); qh=a[:,2:6].copy().view(np.uint32).reshape(nb)
        qs=a[:,6:22]
        lo=(qs&15).astype(np.int32); hi=(qs>>4).astype(np.int32)
        j=np.arange(16)
        h0=((qh[:,None]>>j)&1)<<4; h1=((qh[:,None]>>(j+16))&1)<<4
        q=np.concatenate([lo|h0, hi|h1],axis=1)-16
        return (d*q).reshape(-1,cols)
    if t==12:
        nb=n//256; a=buf[base+off:base+off+nb*144].reshape(nb,144)
        d=f16(a[:,0:2].copy()).reshape(nb); dm=f16(a[:,2:4].copy()).reshape(nb); sc=a[:,4:16].astype(np.int32); qs=a[:,16:]
        out=np.zeros((nb,256),np.float32)
        def smk(j):
            if j<4: return sc[:,j]&63, sc[:,j+4]&63
            return (sc[:,j+4]&15)|((sc[:,j-4]>>6)<<4), (sc[:,j+4]>>4)|((sc[:,j]>>6)<<4)
        for g in range(4):
            s1,m1=smk(2*g); s2,m2=smk(2*g+1); q=qs[:,32*g:32*g+32]
            out[:,64*g:64*g+32]=(d*s1)[:,None]*(q&15)-(dm*m1)[:,None]
            out[:,64*g+32:64*g+64]=(d*s2)[:,None]*(q>>4)-(dm*m2)[:,None]
        return out.reshape(-1,cols)
    if t==14:
        nb=n//256; a=buf[base+off:base+off+nb*210].reshape(nb,210)
        ql=a[:,:128].astype(np.int32); qh=a[:,128:192].astype(np.int32); sc=a[:,192:208].view(np.int8).astype(np.float32); d=f16(a[:,208:210].copy()).reshape(nb)
        out=np.zeros((nb,256),np.float32)
        for h in range(2):
            L=ql[:,64*h:64*h+64]; H=qh[:,32*h:32*h+32]; S=sc[:,8*h:8*h+8]
            for l in range(32):
                is_=l//16
                qv=[(L[:,l]&15)|((H[:,l]&3)<<4),(L[:,l+32]&15)|(((H[:,l]>>2)&3)<<4),(L[:,l]>>4)|(((H[:,l]>>4)&3)<<4),(L[:,l+32]>>4)|(((H[:,l]>>6)&3)<<4)]
                for k in range(4):
                    out[:,128*h+l+32*k]=d*S[:,is_+2*k]*(qv[k]-32)
        return out.reshape(-1,cols)
    raise Exception(t)
toks=M['tokenizer.ggml.tokens']; vid={t:i for i,t in enumerate(toks)}
words=sys.argv[2].split('|')
ids=[vid[w] for w in words]
print(ids)
dim=640; nh=4; hd=256; L=18; eps=1e-6
def rms(x,w): return x/np.sqrt((x*x).mean(-1,keepdims=True)+eps)*w
E=deq('token_embd.weight')
x=E[ids].astype(np.float64)*np.sqrt(640)
n=len(ids); pos=np.arange(n)
def rope(v,base_):
    inv=base_**(-np.arange(0,hd,2)/hd); ang=pos[:,None]*inv[None,:]; c=np.cos(ang); s_=np.sin(ang)
    a=v[...,:hd//2]; bb=v[...,hd//2:]
    return np.concatenate([a*c[:,None,:]-bb*s_[:,None,:], a*s_[:,None,:]+bb*c[:,None,:]],-1)
for l in range(L):
    p=lambda s_: f'blk.{l}.{s_}.weight'
    h=rms(x,deq(p('attn_norm')))
    q=(h@deq(p('attn_q')).T).reshape(n,nh,hd); k=(h@deq(p('attn_k')).T).reshape(n,1,hd); v=(h@deq(p('attn_v')).T).reshape(n,1,hd)
    q=rms(q,deq(p('attn_q_norm'))); k=rms(k,deq(p('attn_k_norm')))
    base_=10000.0 if l%6<5 else 1e6
    q=rope(q,base_); k=rope(k,base_)
    att=np.zeros((n,nh,hd))
    for hh in range(nh):
        sc=(q[:,hh,:]@k[:,0,:].T)/16.0
        sc=sc+np.triu(np.full((n,n),-np.inf),1)
        sc=np.exp(sc-sc.max(-1,keepdims=True)); sc/=sc.sum(-1,keepdims=True)
        att[:,hh,:]=sc@v[:,0,:]
    o_=att.reshape(n,nh*hd)@deq(p('attn_output')).T
    x=x+rms(o_,deq(p('post_attention_norm')))
    h=rms(x,deq(p('ffn_norm')))
    g=h@deq(p('ffn_gate')).T; u=h@deq(p('ffn_up')).T
    gl=0.5*g*(1+np.tanh(0.7978845608*(g+0.044715*g**3)))
    d=(gl*u)@deq(p('ffn_down')).T
    x=x+rms(d,deq(p('post_ffw_norm')))
x=rms(x,deq('output_norm.weight'))
logits=x[-1]@E.T
top=np.argsort(-logits)[:5]
print([(int(t),toks[t],float(logits[t])) for t in top])
